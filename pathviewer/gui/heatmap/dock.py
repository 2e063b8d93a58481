"""The Heatmap dock, the colour bar on the slide, "why this region?", and ``install``.

``install(window)`` adds the **Heatmap** dock (colormap, colour bar, opacity, threshold,
blocky/smooth, tumour outlines, top regions), **Tools > Load heatmap…**, **File > Export
heatmap…**, **View > Show heatmap** (key H on the slide view) and a status-bar field with the
probability of the patch under the cursor.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.errors import USER_ERRORS, PathViewerError, message_about
from pathviewer.core.heatmap import Heatmap
from pathviewer.core.heatmap_export import (
    CONTOUR_FORMATS,
    EXPORT_FORMATS,
    PatchSizeNeeded,
    export_name,
)
from pathviewer.gui import file_dialogs
from pathviewer.gui.heatmap.controller import HeatmapController
from pathviewer.gui.heatmap.overlay import colormap
from pathviewer.gui.viewer.slide_view import ViewKey
from pathviewer.session.heatmap import (
    COLORMAPS,
    REGION_SORTS,
)

if TYPE_CHECKING:
    import pyqtgraph as pg

    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.viewer.slide_view import SlideView
    from pathviewer.ml.similar import SimilarPatch


log = logging.getLogger(__name__)

#: Tick positions and labels of the dock's colour bar, ends included.
COLORBAR_TICKS = [(0.0, "0"), (0.25, "0.25"), (0.5, "0.5"), (0.75, "0.75"), (1.0, "1")]


@dataclass(frozen=True)
class LegendSpec:
    """What a colour bar on the slide shows.

    Attributes
    ----------
    colormap
        One of :data:`COLORMAPS`.
    title
        The quantity (e.g. "Tumour probability").
    labels
        Texts at the left end, the middle and the right end of the bar.
    threshold
        Fraction of the bar below which nothing is drawn on the slide (0: none).
    """

    colormap: str
    title: str = "Tumour probability"
    labels: tuple[str, str, str] = ("0", "0.5", "1")
    threshold: float = 0.0
    #: A value marked under the bar (the run's operating point), and its text.
    mark: float | None = None
    mark_label: str = ""


class ColorLegend(QWidget):
    """A heatmap's colour bar drawn on the slide, with the threshold marked.

    It is a child of the slide view's viewport, so screenshots of the view include it.

    Parameters
    ----------
    view
        The slide view it sits on (it lays the legend out beside the scale bar).
    spec
        Called for what to show; None hides the legend.
    """

    WIDTH = 220
    HEIGHT = 52

    def __init__(self, view: SlideView, spec: Callable[[], LegendSpec | None]) -> None:
        super().__init__(view.viewport())
        self._view = view
        self._spec = spec
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setFixedSize(self.WIDTH, self.HEIGHT)
        #: Shown whenever there is something to show (the View menu's "Colour bar on the slide").
        self.wanted = True
        self._gradients: dict[str, QImage] = {}
        self.hide()
        view.add_bottom_overlay(self)

    def _gradient(self, name: str) -> QImage:
        """The colormap as a 256 x 1 image, made once per colormap (the legend repaints as the
        view pans)."""
        if name not in self._gradients:
            lut = colormap(name).getLookupTable(0.0, 1.0, 256, alpha=False)
            gradient = QImage(256, 1, QImage.Format.Format_RGB32)
            for i, (r, g, b) in enumerate(np.asarray(lut, int)[:, :3]):
                gradient.setPixelColor(i, 0, QColor(int(r), int(g), int(b)))
            self._gradients[name] = gradient
        return self._gradients[name]

    def refresh(self) -> None:
        """Show the current spec (or hide when there is none)."""
        shown = self.wanted and self._spec() is not None
        if shown != self.isVisible():
            self.setVisible(shown)
            self._view.place_overlays()
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        spec = self._spec()
        if spec is None:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(20, 22, 26, 215))
        painter.drawRoundedRect(QRectF(self.rect()), 6, 6)
        font = painter.font()
        font.setPixelSize(11)
        painter.setFont(font)
        left, right, top, height = 10.0, self.width() - 10.0, 20.0, 10.0
        painter.drawImage(QRectF(left, top, right - left, height), self._gradient(spec.colormap))
        title = spec.title
        if spec.threshold > 0:
            # Below the threshold nothing is drawn on the slide: grey that part out.
            cut = left + (right - left) * spec.threshold
            painter.fillRect(QRectF(left, top, cut - left, height), QColor(20, 22, 26, 170))
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(QPointF(cut, top - 3), QPointF(cut, top + height + 3))
            title += f" (shown ≥ {spec.threshold:.2f})"
        painter.setPen(QColor(235, 238, 242))
        painter.drawText(QRectF(left, 3, right - left, 15), Qt.AlignmentFlag.AlignLeft, title)
        below, mid = top + height + 2, (left + right) / 2
        low, middle, high = spec.labels
        if spec.mark is not None:
            # The operating point: a notch through the bar, its text in the middle slot.
            at = left + (right - left) * min(max(spec.mark, 0.0), 1.0)
            painter.setPen(QPen(QColor(255, 80, 80), 2))
            painter.drawLine(QPointF(at, top - 3), QPointF(at, top + height + 3))
            painter.setPen(QColor(255, 140, 140))
            middle = spec.mark_label
            painter.drawText(
                QRectF(mid - 60, below, 120, 15), Qt.AlignmentFlag.AlignHCenter, middle
            )
            painter.setPen(QColor(235, 238, 242))
            middle = ""
        painter.drawText(QRectF(left, below, 60, 15), Qt.AlignmentFlag.AlignLeft, low)
        painter.drawText(QRectF(mid - 30, below, 60, 15), Qt.AlignmentFlag.AlignHCenter, middle)
        painter.drawText(QRectF(right - 60, below, 60, 15), Qt.AlignmentFlag.AlignRight, high)
        painter.end()


class SimilarPatchesDialog(QDialog):
    """The training patches most like a region, with their slides and labels."""

    THUMB = 128

    def __init__(self, patches: Sequence[SimilarPatch], title: str, parent: QWidget | None = None):
        super().__init__(parent)
        from pathviewer.core.slide import open_slide, read_box
        from pathviewer.gui.viewer.tiles import rgb_to_qimage

        self.setWindowTitle("Why this region?")
        layout = QVBoxLayout(self)
        header = QLabel(
            f"<b>{html.escape(title)}</b><br>The training patches the model finds most like this"
            " region's top patch (cosine similarity of its encoder's features), with the label"
            " of the slide each comes from. Mostly positive slides: the model has seen such"
            " tissue in tumour slides; mostly negative: it looks like normal tissue to it."
        )
        header.setWordWrap(True)
        layout.addWidget(header)
        grid = QGridLayout()
        self.captions: list[str] = []
        for i, patch in enumerate(patches):
            label = {1: "positive slide", 0: "negative slide", None: "slide label unknown"}[
                patch.label
            ]
            caption = f"{Path(patch.slide).name}\n{label} · {patch.similarity:.3f}"
            self.captions.append(caption)
            picture = QLabel()
            picture.setFixedSize(self.THUMB, self.THUMB)
            try:
                slide = open_slide(patch.path)
                try:
                    rgb = read_box(slide, patch.box, self.THUMB)
                finally:
                    slide.close()
                picture.setPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
            except (PathViewerError, OSError) as error:
                picture.setText(f"unreadable\n{error}")
                picture.setWordWrap(True)
            colour = "#d84b4b" if patch.label == 1 else "#4b9bd8" if patch.label == 0 else "#888"
            picture.setStyleSheet(f"border: 3px solid {colour};")
            text = QLabel(caption)
            text.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            cell = QVBoxLayout()
            cell.addWidget(picture, alignment=Qt.AlignmentFlag.AlignHCenter)
            cell.addWidget(text)
            grid.addLayout(cell, i // 4, i % 4)
        layout.addLayout(grid)
        positives = sum(p.label == 1 for p in patches)
        self.summary = QLabel(f"{positives} of {len(patches)} from positive slides")
        layout.addWidget(self.summary)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class HeatmapDock(QWidget):
    """The controls of the heatmap: source, colormap and colour bar, opacity, threshold,
    blocky/smooth, tumour outlines, top regions."""

    def __init__(self, controller: HeatmapController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from superqt import QLabeledDoubleSlider

        self.controller = controller
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        top = QHBoxLayout()
        self.source_label = QLabel("No heatmap")
        self.source_label.setWordWrap(True)
        top.addWidget(self.source_label, 1)
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Load a predictions folder or a heatmap .npz")
        top.addWidget(self.load_button)
        layout.addLayout(top)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.show_check = QCheckBox("Show heatmap (H)")
        self.show_check.setChecked(controller.display.visible)
        form.addRow(self.show_check)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(COLORMAPS)
        form.addRow("Colormap", self.colormap_combo)
        self.colorbar_widget, self.colorbar = self._make_colorbar()
        form.addRow(self.colorbar_widget)
        self.opacity_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0.0, 1.0)
        self.opacity_slider.setDecimals(2)
        self.opacity_slider.setValue(controller.display.opacity)
        form.addRow("Opacity", self.opacity_slider)
        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.0, 1.0)
        self.threshold_slider.setDecimals(2)
        self.threshold_slider.setValue(controller.display.threshold)
        self.threshold_slider.setToolTip("Probabilities below this are transparent")
        form.addRow("Threshold", self.threshold_slider)
        self.display_combo = QComboBox()
        self.display_combo.addItems(["Blocky (one square per patch)", "Smooth (bilinear)"])
        form.addRow("Display", self.display_combo)
        self.outlines_check = QCheckBox("Tumour outlines (cohort annotations)")
        form.addRow(self.outlines_check)
        layout.addLayout(form)

        regions_head = QHBoxLayout()
        self.regions_title = QLabel("<b>Top regions</b>")
        regions_head.addWidget(self.regions_title, 1)
        regions_head.addWidget(QLabel("sort by"))
        self.sort_combo = QComboBox()
        self.sort_combo.addItems(list(REGION_SORTS))
        regions_head.addWidget(self.sort_combo)
        layout.addLayout(regions_head)
        self.regions = QTreeWidget()
        self.regions.setColumnCount(4)
        self.regions.setHeaderLabels(["#", "max", "mean", "area"])
        self.regions.setRootIsDecorated(False)
        self.regions.setAlternatingRowColors(True)
        self.regions.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.regions.header().setStretchLastSection(True)
        # Four rows at least: the list must show something in the default layout (the dock
        # scrolls when the window is short).
        self.regions.setMinimumHeight(4 * self.regions.fontMetrics().lineSpacing() + 40)
        layout.addWidget(self.regions, 1)
        self.why_button = QPushButton("Why this region?")
        self.why_button.setToolTip(
            "The training patches the model finds most like the selected region's top patch"
        )
        self.why_button.clicked.connect(self.explain_selected_region)
        layout.addWidget(self.why_button)

        self.show_check.toggled.connect(controller.set_visible)
        self.colormap_combo.currentTextChanged.connect(controller.set_colormap)
        self.opacity_slider.valueChanged.connect(controller.set_opacity)
        self.threshold_slider.valueChanged.connect(controller.set_threshold)
        self.display_combo.currentIndexChanged.connect(lambda i: controller.set_smooth(i == 1))
        self.outlines_check.toggled.connect(controller.set_outlines_visible)
        self.sort_combo.currentTextChanged.connect(controller.set_sort)
        self.regions.itemClicked.connect(self._on_region_clicked)
        self.regions.itemActivated.connect(self._on_region_clicked)
        controller.heatmapChanged.connect(self._on_heatmap_changed)
        controller.regionsChanged.connect(self.fill_regions)
        controller.displayChanged.connect(self._sync)
        self._sync()  # the remembered display, not the widgets' defaults
        self._on_heatmap_changed(controller.heatmap)

    def _make_colorbar(self) -> tuple[QWidget, pg.ColorBarItem]:
        import pyqtgraph as pg

        widget = pg.GraphicsLayoutWidget()
        widget.setBackground(None)
        widget.setFixedHeight(58)
        widget.ci.setContentsMargins(6, 2, 10, 2)
        bar = pg.ColorBarItem(
            values=(0.0, 1.0),
            colorMap=colormap(self.controller.display.colormap),
            orientation="horizontal",
            interactive=False,
            width=14,
            colorMapMenu=False,
        )
        axis = bar.getAxis("bottom")
        axis.setLabel("probability")
        # The ends named too: pyqtgraph's automatic ticks stop at 0.2 and 0.8 on this short bar,
        # and hides end labels that reach the axis's edge.
        axis.setTicks([COLORBAR_TICKS])
        axis.setStyle(hideOverlappingLabels=False)
        widget.addItem(bar)
        return widget, bar

    def _sync(self) -> None:
        """Reflect the controller's settings (changed from code or the H key) in the widgets."""
        d = self.controller.display
        updates: tuple[tuple[QWidget, Callable[[], object]], ...] = (
            (self.show_check, partial(self.show_check.setChecked, d.visible)),
            (self.outlines_check, partial(self.outlines_check.setChecked, d.outlines)),
            (self.colormap_combo, partial(self.colormap_combo.setCurrentText, d.colormap)),
            (self.display_combo, partial(self.display_combo.setCurrentIndex, int(d.smooth))),
            (self.opacity_slider, partial(self.opacity_slider.setValue, d.opacity)),
            (self.threshold_slider, partial(self.threshold_slider.setValue, d.threshold)),
            (self.sort_combo, partial(self.sort_combo.setCurrentText, d.sort_by)),
        )
        for widget, update in updates:
            widget.blockSignals(True)
            update()
            widget.blockSignals(False)
        self.colorbar.setColorMap(colormap(d.colormap))

    def _on_heatmap_changed(self, heatmap: object) -> None:
        c = self.controller
        if isinstance(heatmap, Heatmap):
            rows, cols = heatmap.shape
            scored = int(np.isfinite(heatmap.probs).sum())
            text = (
                f"<b>{c.source}</b><br>{html.escape(heatmap.model or heatmap.method or 'model')}"
                f"<br>{cols}×{rows} patches of {heatmap.patch_size[0]} px · {scored:,} scored"
            )
            if c.operating_point is not None:
                text += f"<br>Operating point: {html.escape(c.operating_point.describe())}"
            elif c.pred_dir is not None:
                text += "<br>No operating point for this run: slides are called at 0.50"
            for warning in heatmap.warnings:
                text += f"<br><span style='color:#ffaa00'>⚠ {html.escape(warning)}</span>"
            slide = c.view.current_slide
            if slide is not None and tuple(slide.dimensions) != tuple(heatmap.dimensions):
                text += (
                    "<br><span style='color:#ffaa00'>heatmap made for a "
                    f"{heatmap.dimensions[0]}×{heatmap.dimensions[1]} slide</span>"
                )
            self.source_label.setText(text)
        else:
            self.source_label.setText(c.source or "No heatmap")
        self.fill_regions()

    def fill_regions(self) -> None:
        """Refill the top-regions list from the controller."""
        self.regions.clear()
        c = self.controller
        self.regions_title.setText(f"<b>Top regions</b> (p ≥ {c.display.region_threshold:.2f})")
        for rank, region in enumerate(c.top_regions(), start=1):
            item = QTreeWidgetItem(
                [
                    str(rank),
                    f"{region.max_prob:.3f}",
                    f"{region.mean_prob:.3f}",
                    c.region_area_text(region),
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, rank - 1)
            item.setToolTip(0, f"{region.cells} patches; click to go there")
            self.regions.addTopLevelItem(item)

    def explain_selected_region(self) -> SimilarPatchesDialog | None:
        """Show the training patches most like the selected (else the first) top region."""
        regions = self.controller.top_regions()
        item = self.regions.currentItem()
        index = int(item.data(0, Qt.ItemDataRole.UserRole)) if item is not None else 0
        if not regions or not 0 <= index < len(regions):
            QMessageBox.information(self, "Why this region?", "This heatmap has no top region.")
            return None
        try:
            patches = self.controller.similar_to_region(regions[index])
        except PathViewerError as error:
            QMessageBox.warning(self, "Why this region?", str(error))
            return None
        region = regions[index]
        title = f"Region {index + 1}: max {region.max_prob:.2f}, {region.cells} patches"
        dialog = SimilarPatchesDialog(patches, title, self)
        dialog.show()
        self.similar_dialog = dialog
        return dialog

    def _on_region_clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        regions = self.controller.top_regions()
        index = item.data(0, Qt.ItemDataRole.UserRole)
        if index is not None and 0 <= int(index) < len(regions):
            self.controller.go_to_region(regions[int(index)])


def choose_and_load(
    window: MainWindow, controller: HeatmapController, folder: bool = False
) -> None:
    """Ask for a predictions folder or a heatmap file and load it (errors as a dialog)."""
    if folder:
        path = file_dialogs.choose_folder(
            window, window.settings, "predictions", "Predictions folder (pathviewer infer)"
        )
    else:
        path = file_dialogs.open_file(
            window,
            window.settings,
            "heatmaps",
            "Load heatmap",
            "Heatmap or predictions (*.npz slides.csv patches.csv prediction.json);;"
            "Patch values of other tools: QuPath tiles, CSV, CLAM, Slideflow"
            " (*.geojson *.json *.csv *.h5 *.hdf5 *.npz);;All files (*)",
        )
    if not path:
        return
    try:
        try:
            controller.load_path(path)
        except PatchSizeNeeded as error:
            # CLAM's heatmap files leave the patch size out, and a small Slideflow grid fits several
            # tile sizes: ask for it, then read again.
            size, ok = QInputDialog.getInt(
                window,
                "Patch size",
                f"{error}\n\nPatch (tile) side in level-0 pixels:",
                256,
                1,
                1_000_000,
            )
            if not ok:
                return
            controller.load_path(path, patch_size=size)
    except PathViewerError as error:
        QMessageBox.warning(window, "Cannot load heatmap", str(error))


#: File > Export heatmap: dialog filter -> format.
EXPORT_FILTERS = {
    "QuPath tiles with a measurement (*.geojson)": "qupath",
    "ASAP likelihood map (*.tif)": "asap",
    "Probability image for QuPath / OpenSlide (*.tif)": "tiff",
    "Patch table x,y,width,height,value (*.csv)": "csv",
    "Tumour regions as QuPath annotations (*.geojson)": "contours",
    "Tumour regions as ASAP annotations (*.xml)": "contours-asap",
}


def choose_and_export(window: MainWindow, controller: HeatmapController) -> None:
    """Ask for a format and a file, and export the shown heatmap (errors as a dialog)."""
    heatmap = controller.heatmap
    if heatmap is None or window.slide_view.current_slide is None:
        QMessageBox.information(window, "Export heatmap", "Show a heatmap on a slide first.")
        return
    first = next(iter(EXPORT_FILTERS))
    path, chosen = file_dialogs.save_file(
        window,
        window.settings,
        "exports",
        "Export heatmap",
        ";;".join(EXPORT_FILTERS),
        suggested=export_name(heatmap.slide, "qupath"),
        selected_filter=first,
        near=str(Path(window.slide_view.current_slide.path).parent),
    )
    if not path:
        return
    fmt = EXPORT_FILTERS.get(chosen, "qupath")
    if not path.endswith(EXPORT_FORMATS[fmt].rsplit(".", 1)[-1]):
        path = str(Path(path).with_suffix("")) + EXPORT_FORMATS[fmt]
    try:
        count = controller.export(path, fmt)
    except USER_ERRORS as error:
        QMessageBox.warning(window, "Export heatmap", message_about(error, path))
        return
    what = "tumour regions" if fmt in CONTOUR_FORMATS else "cells"
    window.statusBar().showMessage(f"Exported {count} {what} to {path}", 8000)


def install(window: MainWindow) -> tuple[HeatmapController, HeatmapDock]:
    """Add the Heatmap dock, its menu actions and the H key; return the controller and panel."""
    controller = HeatmapController(window)
    panel = HeatmapDock(controller)
    dock = QDockWidget("Heatmap", window)
    dock.setObjectName("dock-heatmap")
    dock.setWidget(panel)
    window.add_dock(dock, Qt.DockWidgetArea.RightDockWidgetArea, "heatmap", tab_with="properties")
    dock.hide()

    def on_heatmap(heatmap: object) -> None:
        if heatmap is not None and not dock.isVisible():
            dock.show()
            dock.raise_()

    controller.heatmapChanged.connect(on_heatmap)
    window.figure_captions.append(controller.provenance)

    load = QAction("Load &heatmap…", window)
    load.setToolTip("Load a heatmap .npz, or a predictions folder via its slides.csv")
    load.triggered.connect(lambda: choose_and_load(window, controller))
    load_folder = QAction("Load predictions &folder…", window)
    load_folder.triggered.connect(lambda: choose_and_load(window, controller, folder=True))
    export = QAction("E&xport heatmap…", window)
    export.setToolTip("The shown heatmap for QuPath, ASAP, other viewers or a CSV table")
    export.triggered.connect(lambda: choose_and_export(window, controller))
    window.menu("tools").addAction(load)
    window.menu("tools").addAction(load_folder)
    window.menu("tools").addAction(export)
    controller.export_action = export
    panel.load_button.clicked.connect(lambda: choose_and_load(window, controller, folder=True))

    # The key is handled by an event filter on the slide view (so it works only there); the
    # tab in the text shows it in the menu without making it a window-wide shortcut.
    show = QAction("Show heatmap\tH", window, checkable=True, checked=controller.display.visible)
    show.toggled.connect(controller.set_visible)
    controller.displayChanged.connect(lambda: show.setChecked(controller.display.visible))
    window.menu("view").addAction(show)
    controller.show_action = show
    controller.key_filter = ViewKey(window.slide_view, Qt.Key.Key_H, controller.toggle_visible)

    def legend_spec() -> LegendSpec | None:
        if not controller.display.visible or controller.heatmap is None:
            return None
        point = controller.operating_point
        if point is None:
            return LegendSpec(controller.display.colormap, threshold=controller.display.threshold)
        return LegendSpec(
            controller.display.colormap,
            threshold=controller.display.threshold,
            mark=point.threshold,
            mark_label=f"slide call ≥ {point.threshold:.2f}",
        )

    legend = ColorLegend(window.slide_view, legend_spec)
    controller.legend = legend
    controller.heatmapChanged.connect(lambda _heatmap: legend.refresh())
    controller.displayChanged.connect(legend.refresh)
    on_slide = QAction("&Colour bar on the slide", window, checkable=True, checked=True)
    on_slide.setToolTip("The heatmap's colour bar and threshold over the slide (and screenshots)")

    def want_legend(on: bool) -> None:
        legend.wanted = on
        legend.refresh()

    on_slide.toggled.connect(want_legend)
    window.menu("view").addAction(on_slide)
    return controller, panel
