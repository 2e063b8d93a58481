"""Key presets: which key chooses which annotation tool, and the fit / fill pair.

PathViewer's own keys, and QuPath's for users who move between the two apps (QuPath's
documented defaults: M move, R rectangle, O ellipse, P polygon, V polyline, B brush, "."
points, F fill annotations).  Keys handled by the slide view itself (arrows, + and -, H,
Shift+C, A, 1-9) are the same in every preset.
"""

from __future__ import annotations

#: QSettings key of the preset's name.
PRESET_SETTING = "keys/preset"
DEFAULT_PRESET = "PathViewer"

#: Preset name -> command -> key sequence (Qt's portable text).  Commands: the annotation tools
#: and ``fit`` (fit the slide to the window) and ``fill`` (fill or outline annotations).
KEY_PRESETS: dict[str, dict[str, str]] = {
    "PathViewer": {
        "select": "V",
        "rectangle": "R",
        "ellipse": "C",
        "polygon": "P",
        "line": "L",
        "brush": "B",
        "erase": "E",
        "point": "O",
        "fit": "F",
        "fill": "Shift+F",
    },
    "QuPath": {
        "select": "M",
        "rectangle": "R",
        "ellipse": "O",
        "polygon": "P",
        "line": "V",
        "brush": "B",
        "erase": "Shift+B",
        "point": ".",
        "fit": "Shift+F",
        "fill": "F",
    },
}


def preset_keys(name: str) -> dict[str, str]:
    """The keys of preset ``name``; an unknown name (an old settings file) gives the default."""
    return dict(KEY_PRESETS.get(name, KEY_PRESETS[DEFAULT_PRESET]))
