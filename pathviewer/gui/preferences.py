"""Edit > Preferences and Help > Keyboard shortcuts.

What the window gains (``install(window, annotations, heatmap)``)
-----------------------------------------------------------------
* **Edit > Preferences…**: the key preset, PathViewer's own keys or QuPath's
  (:mod:`pathviewer.session.keys`); the reviewer name; tile cache and threads; the default
  folders file dialogs start in before one was used (:mod:`pathviewer.gui.file_dialogs`); the
  unit measurements are shown in; the heatmap colormap.  Applied when accepted, and remembered.
* The keys of the preset saved in the settings are applied when the window is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.geometry import DISPLAY_UNITS
from pathviewer.gui import file_dialogs
from pathviewer.gui.annotations.controller import UNITS_SETTING
from pathviewer.gui.review.panel import AUTHOR_SETTING, reviewer_name
from pathviewer.gui.viewer.tiles import CACHE_SETTING, THREADS_SETTING, cache_cap_bytes
from pathviewer.session.heatmap import COLORMAPS
from pathviewer.session.keys import DEFAULT_PRESET, KEY_PRESETS, PRESET_SETTING, preset_keys

if TYPE_CHECKING:
    from pathviewer.gui.annotations.controller import AnnotationController
    from pathviewer.gui.heatmap.controller import HeatmapController
    from pathviewer.gui.main_window import MainWindow


class KeyboardShortcutsDialog(QDialog):
    """A searchable table of keys and what they do."""

    def __init__(self, rows: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(560, 620)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter (a key or a command)")
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Key", "Command"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for row, (key, command) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(key))
            self.table.setItem(row, 1, QTableWidgetItem(command))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.table, 1)
        layout.addWidget(
            QLabel(
                "Tool keys follow the preset chosen in Edit > Preferences (PathViewer or QuPath)."
            )
        )
        layout.addWidget(buttons)
        self.filter.textChanged.connect(self._filter)

    def _filter(self, text: str) -> None:
        needle = text.strip().lower()
        for row in range(self.table.rowCount()):
            cells = (self.table.item(row, column) for column in (0, 1))
            shown = not needle or any(needle in cell.text().lower() for cell in cells if cell)
            self.table.setRowHidden(row, not shown)


class PreferencesDialog(QDialog):
    """Edit > Preferences: keys, reviewer, tiles, default folders, units, colormap.

    Applied when accepted (:meth:`apply` and :func:`install`'s handler).
    """

    def __init__(
        self,
        current: str,
        settings: QSettings | None = None,
        parent: QWidget | None = None,
        colormap: str = COLORMAPS[0],
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        settings = settings or QSettings()
        self.reviewer = QLineEdit(str(settings.value(AUTHOR_SETTING, "") or ""))
        self.reviewer.setPlaceholderText(reviewer_name(settings))
        self.reviewer.setToolTip("Stored with every review and triage decision")
        self.cache_mb = QSpinBox()
        self.cache_mb.setRange(64, 65536)
        self.cache_mb.setSingleStep(64)
        self.cache_mb.setSuffix(" MB")
        self.cache_mb.setValue(cache_cap_bytes(settings) // 2**20)
        self.cache_mb.setToolTip("Memory for decoded tiles (applies to the next slide opened)")
        self.threads = QSpinBox()
        self.threads.setRange(0, 64)
        self.threads.setSpecialValueText("automatic")
        try:
            threads = int(str(settings.value(THREADS_SETTING, 0) or 0))
        except ValueError:  # a hand-edited settings file
            threads = 0
        self.threads.setValue(threads)
        self.threads.setToolTip("Tile reading threads (applies on the next launch)")
        self.preset = QComboBox()
        self.preset.addItems(list(KEY_PRESETS))
        self.preset.setCurrentText(current if current in KEY_PRESETS else DEFAULT_PRESET)
        self.preset.setToolTip(
            "QuPath: M move, R rectangle, O ellipse, P polygon, V polyline, B brush, . points,"
            " F fill annotations"
        )
        self.folders: dict[str, QLineEdit] = {}
        folder_rows: list[tuple[str, QHBoxLayout]] = []
        for group, label in file_dialogs.GROUPS.items():
            edit = QLineEdit(str(settings.value(file_dialogs.default_key(group), "") or ""))
            edit.setPlaceholderText("home folder")
            edit.setToolTip(
                f"{label}: where file dialogs start until you have used a folder for that "
                "kind of file; after that they start in the last folder used"
            )
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _checked=False, e=edit: self._browse(e))
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(browse)
            self.folders[group] = edit
            folder_rows.append((label, row))
        self.units = QComboBox()
        self.units.addItems(list(DISPLAY_UNITS))
        unit = str(settings.value(UNITS_SETTING, DISPLAY_UNITS[0]) or "")
        self.units.setCurrentText(unit if unit in DISPLAY_UNITS else DISPLAY_UNITS[0])
        self.units.setToolTip(
            "Areas and lengths in the annotation list and status bar (exports stay in µm)"
        )
        self.colormap = QComboBox()
        self.colormap.addItems(list(COLORMAPS))
        self.colormap.setCurrentText(colormap if colormap in COLORMAPS else COLORMAPS[0])
        self.colormap.setToolTip("Colours of the tumour heatmap (also in the Heatmap dock)")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Keys", self.preset)
        form.addRow("Reviewer name", self.reviewer)
        form.addRow("Tile cache", self.cache_mb)
        form.addRow("Tile threads", self.threads)
        for label, row in folder_rows:
            form.addRow(label, row)
        form.addRow("Measurements in", self.units)
        form.addRow("Heatmap colormap", self.colormap)
        form.addRow(buttons)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Default folder", edit.text())
        if folder:
            edit.setText(folder)

    def apply(self, settings: QSettings) -> None:
        """Store reviewer, tile cache and threads, default folders and units.

        The key preset and the colormap are applied apart (they change the window at once).
        """
        settings.setValue(AUTHOR_SETTING, self.reviewer.text().strip())
        settings.setValue(CACHE_SETTING, self.cache_mb.value())
        settings.setValue(THREADS_SETTING, self.threads.value())
        for group, edit in self.folders.items():
            settings.setValue(file_dialogs.default_key(group), edit.text().strip())
        settings.setValue(UNITS_SETTING, self.units.currentText())


def apply_preferences(
    window: MainWindow,
    annotations: AnnotationController,
    heatmap: HeatmapController,
    dialog: PreferencesDialog,
) -> None:
    """Store an accepted Preferences dialog and show its effect at once."""
    apply_key_preset(window, annotations, dialog.preset.currentText())
    dialog.apply(window.settings)
    window.slide_view.cache.cap_bytes = dialog.cache_mb.value() * 2**20
    # The colormap is part of the remembered heatmap display: one place holds it.
    heatmap.set_colormap(dialog.colormap.currentText())
    annotations.panel.model.refresh()  # headers and values in the new unit
    annotations.panel.show_selection(annotations.selected)


def apply_key_preset(window: MainWindow, annotations: AnnotationController, name: str) -> None:
    """Give the window the keys of preset ``name`` and remember the choice."""
    keys = preset_keys(name)
    window.fit_action.setShortcut(QKeySequence(keys["fit"]))
    annotations.apply_keys(keys)
    window.settings.setValue(PRESET_SETTING, name if name in KEY_PRESETS else DEFAULT_PRESET)


def current_preset(window: MainWindow) -> str:
    """The key preset saved in the window's settings."""
    return str(window.settings.value(PRESET_SETTING, DEFAULT_PRESET))


def install(
    window: MainWindow, annotations: AnnotationController, heatmap: HeatmapController
) -> QAction:
    """Add Edit > Preferences… and apply the saved key preset; return the menu action."""
    apply_key_preset(window, annotations, current_preset(window))

    def edit() -> None:
        dialog = PreferencesDialog(
            current_preset(window), window.settings, window, heatmap.display.colormap
        )
        if dialog.exec() == QDialog.DialogCode.Accepted:
            apply_preferences(window, annotations, heatmap, dialog)

    action = QAction("&Preferences…", window)
    action.triggered.connect(edit)
    menu = window.menu("edit")
    menu.addSeparator()
    menu.addAction(action)
    return action
