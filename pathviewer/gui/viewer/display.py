"""The Display dock: brightness, contrast, gamma and stain channels of the slide shown.

What the window gains (``install(window)``)
-------------------------------------------
* ``window.context.display`` (:class:`DisplayController`) holds the
  :class:`~pathviewer.session.display.DisplaySettings` of the slide shown, applies them to the
  slide view and remembers them per slide (in the window's QSettings).
* A **Display** dock, **View > Adjust display** (Shift+C on the slide view, as in QuPath), and
  "Estimate stains from view" (Macenko on the region in view).

The settings change only what is painted: the view adjusts its screen pixels through lookup
tables, so no tile is read again (see :meth:`pathviewer.gui.viewer.slide_view.SlideView.set_display`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.errors import SlideError
from pathviewer.core.identity import slide_path_key
from pathviewer.core.slide import read_box
from pathviewer.core.stain import estimate_stain_vectors
from pathviewer.gui.viewer.slide_view import ViewKey
from pathviewer.session.display import (
    BRIGHTNESS_RANGE,
    CONTRAST_RANGE,
    ESTIMATED,
    GAMMA_RANGE,
    STAIN_SETS,
    DisplaySettings,
)

if TYPE_CHECKING:
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.viewer.slide_view import SlideView

log = logging.getLogger(__name__)

#: QSettings group of the remembered settings, one JSON value per slide.
SETTINGS_GROUP = "display/slides"

#: Longest side, in pixels, of the region read to estimate stains from the view.
ESTIMATE_SIDE = 1024


def slide_key(path: str) -> str:
    """The QSettings key of a slide's display settings (its resolved path, hashed)."""
    return hashlib.sha1(slide_path_key(path).encode("utf-8")).hexdigest()[:20]


class DisplayController(QObject):
    """The display settings of the slide shown, remembered per slide.

    Parameters
    ----------
    view
        The slide view that paints with the settings.
    settings_store
        Where each slide's settings are remembered.
    """

    #: The settings changed (new values, or another slide opened).
    changed = Signal(object)

    def __init__(self, view: SlideView, settings_store: QSettings) -> None:
        super().__init__(view)
        self._view = view
        self._store = settings_store
        self._settings = DisplaySettings()
        #: Filter of the slide view's Shift+C, set by :func:`install`.
        self.key_filter: QObject | None = None
        #: The selected region annotation (slide path, area), when one is: stains are then
        #: estimated there rather than over the whole view.
        self.selected_region: Callable[[], tuple[str, Any] | None] | None = None
        view.slideChanged.connect(self._on_slide_changed)

    @property
    def settings(self) -> DisplaySettings:
        """The settings shown."""
        return self._settings

    def set_settings(self, settings: DisplaySettings) -> None:
        """Show ``settings`` and remember them for the open slide."""
        if settings == self._settings:
            return
        self._settings = settings
        self._view.set_display(settings)
        self._remember()
        self.changed.emit(settings)

    def update(self, **changes: object) -> None:
        """Change some settings (see :meth:`DisplaySettings.replace`)."""
        self.set_settings(self._settings.replace(**changes))

    def reset(self) -> None:
        """Back to the scan as it is."""
        self.set_settings(DisplaySettings())

    def estimate_from_view(self) -> None:
        """Estimate the two stains (Macenko) from a region and use them.

        The region is the selected region annotation when there is one (draw a rectangle on
        a place with both stains), else what the view shows.

        Raises
        ------
        ValueError
            No slide is open, or the region has too little tissue or a single colour.
        SlideError
            The region cannot be read.
        """
        slide = self._view.current_slide
        if slide is None:
            raise ValueError("open a slide first")
        width, height = slide.dimensions
        drawn = self.selected_region() if self.selected_region is not None else None
        if drawn is not None:
            left, top, right, bottom = drawn[1].bounds
        else:
            area = self._view.visible_level0_rect()
            left, top, right, bottom = area.left(), area.top(), area.right(), area.bottom()
        x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
        x1, y1 = min(width, math.ceil(right)), min(height, math.ceil(bottom))
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the view shows no part of the slide")
        scale = min(1.0, ESTIMATE_SIDE / max(x1 - x0, y1 - y0))
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        rgb = read_box(slide, (x0, y0, x1 - x0, y1 - y0), size)
        try:
            matrix, _ = estimate_stain_vectors(rgb)
        except ValueError as error:
            raise ValueError(f"cannot estimate stains from this view: {error}") from None
        channel = "stain1" if self._settings.channel == "original" else self._settings.channel
        self.update(stain_set=ESTIMATED, vectors=matrix[:2], channel=channel)

    def _remember(self) -> None:
        slide = self._view.current_slide
        if slide is None:
            return
        key = f"{SETTINGS_GROUP}/{slide_key(slide.path)}"
        if self._settings.is_identity and self._settings.stain_set == "H&E":
            self._store.remove(key)
        else:
            self._store.setValue(key, json.dumps(self._settings.to_dict()))

    def _recalled(self, path: str) -> DisplaySettings:
        value = self._store.value(f"{SETTINGS_GROUP}/{slide_key(path)}", "")
        if not value:
            return DisplaySettings()
        try:
            return DisplaySettings.from_dict(json.loads(str(value)))
        except (ValueError, TypeError, AttributeError) as error:
            # A hand-edited or older settings file must not stop the slide from opening.
            log.warning("ignoring the saved display settings of %s: %s", path, error)
            return DisplaySettings()

    def _on_slide_changed(self, slide: object) -> None:
        current = self._view.current_slide
        settings = DisplaySettings() if current is None else self._recalled(current.path)
        self._settings = settings
        self._view.set_display(settings)
        self.changed.emit(settings)


class _LogSlider(QWidget):
    """A slider over a log scale (contrast, gamma) with its value shown beside it."""

    valueChanged = Signal(float)

    def __init__(self, bounds: tuple[float, float], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._bounds = bounds
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(100 * math.log10(bounds[0])), round(100 * math.log10(bounds[1])))
        self.label = QLabel()
        self.label.setMinimumWidth(44)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.slider.valueChanged.connect(self._on_slider)
        self.set_value(1.0)

    def value(self) -> float:
        return float(10 ** (self.slider.value() / 100))

    def set_value(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(100 * math.log10(value)))
        self.slider.blockSignals(False)
        self.label.setText(f"{value:.2f}")

    def _on_slider(self, _position: int) -> None:
        self.label.setText(f"{self.value():.2f}")
        self.valueChanged.emit(self.value())


class DisplayPanel(QWidget):
    """The Display dock's contents: renders :class:`DisplayController` and edits it."""

    CHANNEL_ITEMS = ("original", "stain1", "stain2", "stains")

    def __init__(self, controller: DisplayController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.channel_combo = QComboBox()
        self.stain_combo = QComboBox()
        self.stain_combo.addItems([*STAIN_SETS, ESTIMATED])
        self.estimate_button = QPushButton("Estimate stains from view")
        self.estimate_button.setToolTip(
            "Macenko estimate of the two stains from the selected region (draw a rectangle"
            " where both stains are), or from what the view shows"
        )
        self.brightness = QSlider(Qt.Orientation.Horizontal)
        self.brightness.setRange(round(100 * BRIGHTNESS_RANGE[0]), round(100 * BRIGHTNESS_RANGE[1]))
        self.brightness_label = QLabel("0")
        self.brightness_label.setMinimumWidth(44)
        self.contrast = _LogSlider(CONTRAST_RANGE)
        self.gamma = _LogSlider(GAMMA_RANGE)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Show the scan as it is")
        self.note = QLabel(
            "Display only: the slide, the heatmap and the training data are unchanged."
        )
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(mid);")

        brightness_row = QHBoxLayout()
        brightness_row.addWidget(self.brightness, 1)
        brightness_row.addWidget(self.brightness_label)
        form = QFormLayout()
        form.addRow("Show", self.channel_combo)
        form.addRow("Stains", self.stain_combo)
        form.addRow("", self.estimate_button)
        form.addRow("Brightness", brightness_row)
        form.addRow("Contrast", self.contrast)
        form.addRow("Gamma", self.gamma)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.reset_button)
        layout.addWidget(self.note)
        layout.addStretch(1)

        self.channel_combo.currentIndexChanged.connect(self._on_channel)
        self.stain_combo.currentTextChanged.connect(self._on_stain_set)
        self.brightness.valueChanged.connect(self._on_brightness)
        self.contrast.valueChanged.connect(lambda value: controller.update(contrast=value))
        self.gamma.valueChanged.connect(lambda value: controller.update(gamma=value))
        self.reset_button.clicked.connect(controller.reset)
        self.estimate_button.clicked.connect(self._estimate)
        controller.changed.connect(self.show_settings)
        self.show_settings(controller.settings)

    def show_settings(self, settings: object) -> None:
        """Show ``settings`` in the controls without echoing changes back."""
        assert isinstance(settings, DisplaySettings)
        widgets = (self.channel_combo, self.stain_combo, self.brightness)
        for widget in widgets:
            widget.blockSignals(True)
        first, second = settings.stain_names
        self.channel_combo.clear()
        self.channel_combo.addItems(
            ["Original colour", first, second, f"{first} + {second} (no residual)"]
        )
        self.channel_combo.setCurrentIndex(self.CHANNEL_ITEMS.index(settings.channel))
        self.stain_combo.setCurrentText(settings.stain_set)
        self.brightness.setValue(round(100 * settings.brightness))
        self.brightness_label.setText(f"{settings.brightness:+.2f}")
        for widget in widgets:
            widget.blockSignals(False)
        self.contrast.set_value(settings.contrast)
        self.gamma.set_value(settings.gamma)

    def _on_channel(self, index: int) -> None:
        if index >= 0:
            self._controller.update(channel=self.CHANNEL_ITEMS[index])

    def _on_stain_set(self, name: str) -> None:
        if name == ESTIMATED:
            if self._controller.settings.stain_set != ESTIMATED:
                self._estimate()
            return
        self._controller.update(stain_set=name)

    def _on_brightness(self, position: int) -> None:
        self.brightness_label.setText(f"{position / 100:+.2f}")
        self._controller.update(brightness=position / 100)

    def _estimate(self) -> None:
        try:
            self._controller.estimate_from_view()
        except (ValueError, SlideError) as error:
            QMessageBox.warning(self, "Estimate stains", str(error))
            self.show_settings(self._controller.settings)


def show_dock(dock: QDockWidget) -> None:
    """Show and raise ``dock`` (it may be a hidden tab)."""
    dock.show()
    dock.raise_()


def install(
    window: MainWindow,
    selected_region: Callable[[], tuple[str, Any] | None] | None = None,
) -> tuple[DisplayController, DisplayPanel]:
    """Add the Display dock, View > Adjust display and Shift+C; return controller and panel.

    ``selected_region`` gives the selected region annotation (stains are estimated there).
    """
    controller = DisplayController(window.slide_view, window.settings)
    controller.selected_region = selected_region
    panel = DisplayPanel(controller)
    dock = QDockWidget("Display", window)
    dock.setObjectName("dock-display")
    dock.setWidget(panel)
    window.add_dock(dock, Qt.DockWidgetArea.RightDockWidgetArea, "display", tab_with="properties")
    dock.hide()
    action = QAction("Adjust &display…\tShift+C", window)
    action.setToolTip("Brightness, contrast, gamma and stain channels of the slide")
    action.triggered.connect(lambda: show_dock(dock))
    window.menu("view").addAction(action)
    controller.key_filter = ViewKey(
        window.slide_view, Qt.Key.Key_C, lambda: show_dock(dock), Qt.KeyboardModifier.ShiftModifier
    )
    return controller, panel
