"""Heatmap overlay: patch probabilities drawn over the slide, with a control dock.

What the window gains (``install(window)``)
-------------------------------------------
* ``window.context.heatmap`` (:class:`HeatmapController`) owns the heatmap of the slide shown
  and its display settings.  API for other features:

  - ``set_heatmap(heatmap)`` shows a :class:`~pathviewer.core.heatmap.Heatmap` over the open
    slide (None removes it).
  - ``update_patches(rows, cols, probs)`` fills cells in place (progressive inference: call
    ``set_heatmap`` once with an all-NaN grid, then this from the worker's signals; only the
    changed rectangle is re-quantised and repainted).
  - ``load_path(path)`` loads a predictions folder written by ``pathviewer infer`` (``PRED_DIR``
    with ``slides.csv`` and ``heatmaps/<slide stem>.npz``) or a single ``.npz``.  With a folder,
    the heatmap follows the slide shown and the cohort panel gets the slide scores.
  - ``set_colormap``, ``set_opacity``, ``set_threshold``, ``set_visible``, ``set_smooth``,
    ``set_outlines_visible``, ``top_regions()``.

* A **Heatmap** dock (colormap, colour bar, opacity, threshold, blocky/smooth, tumour outlines,
  top regions), **Tools > Load heatmap…**, **View > Show heatmap** (key H on the slide view), and a
  status-bar field with the probability of the patch under the cursor.

Rendering
---------
The probabilities are quantised once to an 8-bit indexed :class:`QImage` (index 0 = not scored,
1..255 = probability 0..1).  The :class:`HeatmapOverlay` item draws that image with an item
transform *scale by patch size, translate by grid origin*, so one image pixel is exactly one patch
in the scene's level-0 coordinates.  Every display control (colormap, opacity, threshold) only
rebuilds the 256-entry colour table (``QImage.setColorTable``); the probabilities are never
re-read or re-quantised.  Smooth display is bilinear upsampling by the painter
(``SmoothPixmapTransform``); blocky display is nearest-neighbour.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QPixmap,
    QTransform,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGraphicsItem,
    QGraphicsPathItem,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QStyleOptionGraphicsItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from pathviewer.core.errors import PathViewerError
from pathviewer.core.heatmap import Heatmap, HeatmapError, load_heatmap
from pathviewer.core.heatmap_export import (
    CONTOUR_FORMATS,
    EXPORT_FORMATS,
    export_name,
    read_heatmap_file,
    write_heatmap,
)
from pathviewer.core.identity import slide_path_key
from pathviewer.core.operating_point import OperatingPoint
from pathviewer.core.predictions import (
    HEATMAPS,
    SLIDES_CSV,
    find_heatmap,
)
from pathviewer.gui.slide_view import ViewKey
from pathviewer.session.heatmap import (
    COLORMAPS,
    REGION_SORTS,
    HeatmapDisplay,
    Region,
    find_regions,
    heatmap_misfit,
    read_prediction_folder,
)

if TYPE_CHECKING:
    import pyqtgraph as pg

    from pathviewer.core.cohort import CohortEntry
    from pathviewer.core.slide import SlideSource
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.slide_view import SlideView
    from pathviewer.ml.similar import SimilarPatch

log = logging.getLogger(__name__)

#: Probability levels of the indexed image: index ``i >= 1`` is probability ``(i - 1) / 254``.
LEVELS = 255

#: z-values: the heatmap above the slide (0), the tumour outlines above the heatmap.
HEATMAP_Z = 10.0
OUTLINE_Z = 11.0

#: Colormaps not shipped with pyqtgraph (which bundles no matplotlib maps but viridis, inferno,
#: magma...): control points of matplotlib's ``coolwarm`` (Moreland's diverging map) and ``jet``.
_CONTROL_POINTS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "coolwarm": (
        (0.0, (59, 76, 192)),
        (0.125, (98, 130, 234)),
        (0.25, (141, 176, 254)),
        (0.375, (184, 208, 249)),
        (0.5, (221, 221, 221)),
        (0.625, (245, 196, 173)),
        (0.75, (244, 154, 123)),
        (0.875, (222, 96, 77)),
        (1.0, (180, 4, 38)),
    ),
    "jet": (
        (0.0, (0, 0, 128)),
        (0.11, (0, 0, 255)),
        (0.125, (0, 0, 255)),
        (0.34, (0, 219, 255)),
        (0.35, (0, 229, 246)),
        (0.375, (20, 255, 226)),
        (0.64, (238, 255, 8)),
        (0.65, (255, 236, 0)),
        (0.89, (255, 18, 0)),
        (0.91, (231, 0, 0)),
        (1.0, (128, 0, 0)),
    ),
}


def colormap(name: str) -> pg.ColorMap:
    """The pyqtgraph :class:`ColorMap` called ``name`` (one of :data:`COLORMAPS`).

    Raises
    ------
    ValueError
        Unknown colormap name.
    """
    import pyqtgraph as pg

    if name in _CONTROL_POINTS:
        points = _CONTROL_POINTS[name]
        return pg.ColorMap([p for p, _ in points], [(*rgb, 255) for _, rgb in points], name=name)
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r} (choose from {', '.join(COLORMAPS)})")
    return pg.colormap.get(name)


def quantise(probs: np.ndarray) -> np.ndarray:
    """Indices of the 8-bit heatmap image: 0 = not scored (NaN), ``1 + round(p * 254)`` otherwise."""
    values = np.asarray(probs, np.float32)
    out = np.zeros(values.shape, np.uint8)
    finite = np.isfinite(values)
    out[finite] = 1 + np.rint(np.clip(values[finite], 0.0, 1.0) * (LEVELS - 1)).astype(np.uint8)
    return out


def level_probabilities() -> np.ndarray:
    """Probability of each image index 1..255 (``(255,)`` float, 0..1)."""
    return np.linspace(0.0, 1.0, LEVELS)


def color_table(name: str, opacity: float, threshold: float) -> list[int]:
    """The 256 ARGB entries of the heatmap image for a colormap, opacity and lower threshold.

    Index 0 (not scored) and levels below ``threshold`` are fully transparent.
    """
    levels = level_probabilities()
    rgba = np.asarray(colormap(name).map(levels, mode="byte"), np.uint32)
    alpha = np.where(levels >= threshold - 1e-6, round(np.clip(opacity, 0.0, 1.0) * 255), 0)
    argb = (alpha.astype(np.uint32) << 24) | (rgba[:, 0] << 16) | (rgba[:, 1] << 8) | rgba[:, 2]
    return [0, *(int(v) for v in argb)]


def difference_color_table(name: str, opacity: float) -> list[int]:
    """Colour table of a difference heatmap (0.5 = no change): the more change, the more opaque.

    Unchanged cells leave the slide as it is instead of tinting it with the colormap's middle.
    """
    levels = level_probabilities()
    rgba = np.asarray(colormap(name).map(levels, mode="byte"), np.uint32)
    # The square root lifts small changes (0.1 reads as 0.32) where the eye would miss them.
    strength = np.sqrt(np.clip(np.abs(levels - 0.5) * 2.0, 0.0, 1.0))
    alpha = np.rint(strength * np.clip(opacity, 0.0, 1.0) * 255).astype(np.uint32)
    argb = (alpha << 24) | (rgba[:, 0] << 16) | (rgba[:, 1] << 8) | rgba[:, 2]
    return [0, *(int(v) for v in argb)]


def heatmap_image(heatmap: Heatmap, table: list[int]) -> QImage:
    """The 8-bit indexed image of ``heatmap`` (one pixel per patch) with colour ``table``."""
    rows, cols = heatmap.shape
    image = QImage(max(cols, 1), max(rows, 1), QImage.Format.Format_Indexed8)
    image.setColorTable(table)
    image.fill(0)
    if rows and cols:
        pixels = np.frombuffer(image.bits(), np.uint8).reshape(image.height(), image.bytesPerLine())
        pixels[:, :cols] = quantise(heatmap.probs)
    return image


class HeatmapOverlay(QGraphicsItem):
    """The heatmap image over the slide: one image pixel = one patch, in level-0 coordinates.

    Parameters
    ----------
    image
        The 8-bit indexed image (``cols x rows``) whose colour table is the display LUT.
    origin, patch_size
        Level-0 grid origin and cell size: the item transform scales by ``patch_size`` and
        translates by ``origin``.
    """

    def __init__(self, image: QImage, origin: tuple[int, int], patch_size: tuple[int, int]) -> None:
        super().__init__()
        self._image = image
        self._rect = QRectF(0, 0, image.width(), image.height())
        self._rendered: QImage | None = None
        self.smooth = False
        self.setTransform(
            QTransform(float(patch_size[0]), 0, 0, float(patch_size[1]), origin[0], origin[1])
        )
        self.setZValue(HEATMAP_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect

    def invalidate(self, rect: QRectF | None = None) -> None:
        """The colour table or some cells changed: drop the converted image, repaint ``rect``
        (cells; default everything)."""
        self._rendered = None
        if rect is None:
            self.update()
        elif self.smooth:
            # Bilinear filtering spreads a cell's colour half a cell into its neighbours.
            self.update(rect.adjusted(-1, -1, 1, 1))
        else:
            self.update(rect)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        if self._rendered is None:
            # Painting an indexed image converts it on every draw; converting once per change
            # keeps panning cheap on large grids.
            self._rendered = self._image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.smooth)
        painter.drawImage(self._rect, self._rendered)


def _outline_path(annotations: Sequence[object]) -> QPainterPath:
    """One path with the rings of every polygon of ``annotations``."""
    path = QPainterPath()
    for annotation in annotations:
        geometry = annotation.geometry  # type: ignore[attr-defined]
        polygons = getattr(geometry, "geoms", [geometry])
        for polygon in polygons:
            if polygon.geom_type != "Polygon":
                continue
            for ring in [polygon.exterior, *polygon.interiors]:
                coords = np.asarray(ring.coords)
                if len(coords) < 2:
                    continue
                path.moveTo(float(coords[0, 0]), float(coords[0, 1]))
                for x, y in coords[1:]:
                    path.lineTo(float(x), float(y))
                path.closeSubpath()
    return path


class HeatmapController(QObject):
    """Owns the heatmap of the slide shown, its overlay item and display settings.

    Signals
    -------
    heatmapChanged(object)
        A new heatmap (or None) is shown.
    regionsChanged()
        :meth:`top_regions` changed (new heatmap, threshold, patches filled in).
    displayChanged()
        A display setting changed (colormap, opacity, threshold, visibility, smoothing).
    """

    heatmapChanged = Signal(object)
    regionsChanged = Signal()
    displayChanged = Signal()

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.view = window.slide_view
        self.heatmap: Heatmap | None = None
        self.image: QImage | None = None
        self.item: HeatmapOverlay | None = None
        self.outline_item: QGraphicsPathItem | None = None
        self.pred_dir: Path | None = None
        #: The run's operating point from the predictions folder shown (None: slides at 0.5).
        self.operating_point: OperatingPoint | None = None
        #: The model that made the heatmap shown, when known ("why this region?" needs it).
        self.model_path: Path | None = None
        self._similar_cache: dict[Path, tuple[Any, Any]] = {}
        self.source = ""
        #: How the heatmap is drawn (the source of truth; the dock and menus render it).
        self.display = HeatmapDisplay()
        self._regions: list[Region] | None = None
        self._predictions: dict[str, tuple[float, int | None]] = {}
        self._annotation_cache: dict[Path, QPainterPath] = {}
        # Set by install(): the View menu's toggle and the slide view's H-key filter.
        self.show_action: QAction | None = None
        self.export_action: QAction | None = None
        self.key_filter: QObject | None = None
        self.legend: ColorLegend | None = None
        self.status_label = QLabel("")
        window.statusBar().addPermanentWidget(self.status_label)
        self._regions_timer = QTimer(self)
        self._regions_timer.setSingleShot(True)
        self._regions_timer.setInterval(150)
        self._regions_timer.timeout.connect(self._refresh_regions)
        self.view.slideChanged.connect(self._on_slide_changed)
        self.view.cursorMoved.connect(self._on_cursor)

    # -- loading -----------------------------------------------------------------------------

    def load_path(self, path: str | Path) -> None:
        """Load a predictions folder (``slides.csv``, ``heatmaps/``) or one heatmap ``.npz``.

        A file inside a predictions folder (``slides.csv``, ``patches.csv``...) loads the folder.

        Raises
        ------
        HeatmapError
            Not a heatmap / predictions folder, or a corrupt file.
        """
        path = Path(path)
        if path.is_file() and path.suffix.lower() == ".npz":
            heatmap = load_heatmap(path)
            problem = self.misfit(heatmap)
            if problem:
                raise HeatmapError(f"{path}: {problem}")
            self.pred_dir = None
            self.operating_point = None
            self.model_path = None
            self.set_heatmap(heatmap, source=path.name)
            return
        if path.is_file() and path.suffix.lower() in (".geojson", ".json", ".csv"):
            self._load_patch_table(path)
            return
        if path.is_file():
            path = path.parent
        if not path.is_dir():
            raise HeatmapError(f"{path}: no such heatmap file or predictions folder")
        if not (path / HEATMAPS).is_dir() and not (path / SLIDES_CSV).is_file():
            raise HeatmapError(f"{path}: not a predictions folder (no heatmaps/ or slides.csv)")
        found = read_prediction_folder(path)
        self._predictions = (
            {row.slide: (row.score, row.pred) for row in found.slides} if found else {}
        )
        info = found.info if found is not None else None
        self.operating_point = info.operating_point if info is not None else None
        self.model_path = Path(info.model) if info is not None and info.model else None
        self.pred_dir = path
        self._apply_predictions()
        self._load_for_current_slide()

    def _load_patch_table(self, path: Path) -> None:
        """Another tool's per-patch values (QuPath tiles, x,y,width,height,value CSV) on the
        open slide."""
        slide = self.view.current_slide
        if slide is None:
            raise HeatmapError(f"{path}: open the slide these patches belong to first")
        entry = self.cohort_entry(slide)
        heatmap = read_heatmap_file(path, entry.slide if entry else slide.path, slide.dimensions)
        self.pred_dir = None
        self.operating_point = None
        self.model_path = None
        self.set_heatmap(heatmap, source=path.name)

    def export(self, path: str | Path, fmt: str) -> int:
        """Write the shown heatmap for another tool (see :mod:`pathviewer.core.heatmap_export`).

        Returns
        -------
        int
            Cells written (tiles, rows or scored map cells).

        Raises
        ------
        PathViewerError
            No heatmap is shown, or it does not fit the open slide.
        OSError
            The file cannot be written (nothing is left behind).
        """
        heatmap, slide = self.heatmap, self.view.current_slide
        if heatmap is None or slide is None:
            raise HeatmapError("no heatmap is shown")
        return write_heatmap(heatmap, path, fmt, slide)

    def set_heatmap(self, heatmap: Heatmap | None, source: str = "") -> None:
        """Show ``heatmap`` over the open slide (None removes it).

        The probabilities are quantised once here; display controls only swap the colour table.
        """
        self._remove_items()
        self.heatmap = heatmap
        self.source = source or (heatmap.slide if heatmap is not None else "")
        self.image = None
        self._regions = None
        if heatmap is not None:
            self.image = heatmap_image(heatmap, self._color_table())
        self._add_items()
        self.status_label.setText("")
        self.heatmapChanged.emit(heatmap)
        self.regionsChanged.emit()

    def update_patches(
        self, rows: Sequence[int] | np.ndarray, cols: Sequence[int] | np.ndarray, probs: object
    ) -> None:
        """Set the probabilities of cells ``(rows[i], cols[i])`` and repaint only those cells.

        For progressive inference: the image is updated in place (only the new values are
        quantised) and the overlay repaints the rectangle that holds the changed cells.
        Cells outside the grid are ignored.
        """
        if self.heatmap is None or self.image is None:
            return
        r = np.asarray(rows, np.int64).reshape(-1)
        c = np.asarray(cols, np.int64).reshape(-1)
        p = np.asarray(probs, np.float32).reshape(-1)
        n_rows, n_cols = self.heatmap.shape
        ok = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols)
        r, c, p = r[ok], c[ok], p[ok]
        if not len(r):
            return
        self.heatmap.probs[r, c] = p
        self._pixels(self.image)[r, c] = quantise(p)
        if self.item is not None:
            rect = QRectF(
                float(c.min()),
                float(r.min()),
                float(c.max() - c.min() + 1),
                float(r.max() - r.min() + 1),
            )
            self.item.invalidate(rect)
        self._regions = None
        self._regions_timer.start()

    @staticmethod
    def _pixels(image: QImage) -> np.ndarray:
        """Writable ``(height, bytesPerLine)`` view of an indexed image's pixels."""
        return np.frombuffer(image.bits(), np.uint8).reshape(image.height(), image.bytesPerLine())

    # -- display settings (colour table only) ------------------------------------------------

    def _color_table(self) -> list[int]:
        display = self.display
        return color_table(display.colormap, display.opacity, display.threshold)

    def set_display(self, display: HeatmapDisplay) -> None:
        """Show the heatmap as ``display`` says; only what changed is redone (never a re-read)."""
        old, self.display = self.display, display
        if (old.colormap, old.opacity, old.threshold) != (
            display.colormap,
            display.opacity,
            display.threshold,
        ) and self.image is not None:
            self.image.setColorTable(self._color_table())
            if self.item is not None:
                self.item.invalidate()
        if old.visible != display.visible:
            if self.item is not None:
                self.item.setVisible(display.visible)
            if not display.visible:
                self.status_label.setText("")
        if old.smooth != display.smooth and self.item is not None:
            self.item.smooth = display.smooth
            self.item.update()
        if old.outlines != display.outlines:
            if display.outlines and self.outline_item is None:
                self._add_outlines()
            if self.outline_item is not None:
                self.outline_item.setVisible(display.outlines)
        if old.region_threshold != display.region_threshold:
            self._regions = None
            self._regions_timer.start()
        if old.sort_by != display.sort_by:
            self._regions = None
            self.regionsChanged.emit()
        if old != display:
            self.displayChanged.emit()

    def set_colormap(self, name: str) -> None:
        """Use colormap ``name`` (one of :data:`COLORMAPS`)."""
        self.set_display(self.display.replace(colormap=name))

    def set_opacity(self, opacity: float) -> None:
        """Opacity of the heatmap, 0..1."""
        self.set_display(self.display.replace(opacity=opacity))

    def set_threshold(self, threshold: float) -> None:
        """Probabilities below ``threshold`` are transparent (and not part of top regions)."""
        self.set_display(self.display.replace(threshold=threshold))

    def set_visible(self, visible: bool) -> None:
        """Show or hide the heatmap (key H on the slide view)."""
        self.set_display(self.display.replace(visible=visible))

    def toggle_visible(self) -> None:
        self.set_visible(not self.display.visible)

    def set_smooth(self, smooth: bool) -> None:
        """Smooth (bilinear) or blocky (nearest, one flat square per patch) display."""
        self.set_display(self.display.replace(smooth=smooth))

    def set_outlines_visible(self, visible: bool) -> None:
        """Show the tumour annotations of the slide's cohort row as outlines."""
        self.set_display(self.display.replace(outlines=visible))

    # -- regions -----------------------------------------------------------------------------

    def set_sort(self, sort_by: str) -> None:
        """Sort top regions by ``"max"``, ``"mean"`` or ``"area"``."""
        self.set_display(self.display.replace(sort_by=sort_by))

    def top_regions(self) -> list[Region]:
        """Connected regions at or above the display's ``region_threshold``, best first (lazily computed)."""
        if self.heatmap is None:
            return []
        if self._regions is None:
            display = self.display
            self._regions = find_regions(
                self.heatmap.probs, display.region_threshold, display.sort_by
            )
        return self._regions

    def region_centre(self, region: Region) -> tuple[float, float]:
        """Level-0 centre of a region's highest patch."""
        assert self.heatmap is not None
        x, y, w, h = self.heatmap.cell_box(*region.peak)
        return x + w / 2, y + h / 2

    def similar_to_region(self, region: Region, k: int = 8) -> list[SimilarPatch]:
        """The training patches the heatmap's model finds most like the region's top patch.

        Raises
        ------
        PathViewerError
            No heatmap or slide, the heatmap's model is unknown or gone, or its run has no
            index of its training patches.
        """
        from pathviewer.ml.model_file import ModelFile
        from pathviewer.ml.similar import SimilarIndex, embed_boxes

        slide = self.view.current_slide
        if self.heatmap is None or slide is None:
            raise HeatmapError("show a heatmap on a slide first")
        if self.model_path is None:
            raise HeatmapError(
                "this heatmap does not say which model made it (load a predictions folder"
                " written by pathviewer infer, or analyse the slide with a run)"
            )
        if self.model_path not in self._similar_cache:
            self._similar_cache[self.model_path] = (
                ModelFile.load(self.model_path),
                SimilarIndex.of_model(self.model_path),
            )
        model, index = self._similar_cache[self.model_path]
        box = self.heatmap.cell_box(*region.peak)
        (feature,) = embed_boxes(model, slide, [box])
        return list(index.nearest(feature, k))

    def go_to_region(self, region: Region) -> None:
        """Centre the view on a region's highest patch, zooming in so the region fills about
        half of the view (never zooming out)."""
        if self.heatmap is None:
            return
        r0, c0, r1, c1 = region.bbox
        pw, ph = self.heatmap.patch_size
        viewport = self.view.viewport().rect()
        fit = 0.5 * min(
            viewport.width() / ((c1 - c0 + 1) * pw), viewport.height() / ((r1 - r0 + 1) * ph)
        )
        scale = self.view.scale_factor()
        if fit > scale:
            self.view.set_scale(min(fit, 1.0))
        self.view.center_on(*self.region_centre(region))

    def _refresh_regions(self) -> None:
        self.regionsChanged.emit()

    def region_area_text(self, region: Region) -> str:
        """Area of a region in mm² (or level-0 px² without MPP)."""
        assert self.heatmap is not None
        px = region.cells * self.heatmap.patch_size[0] * self.heatmap.patch_size[1]
        slide = self.view.current_slide
        mpp = slide.mpp if slide is not None else None
        if mpp:
            return f"{px * mpp[0] * mpp[1] / 1e6:.3f} mm²"
        return f"{px:,} px²"

    # -- slide following ---------------------------------------------------------------------

    def cohort_entry(self, slide: SlideSource | None = None) -> CohortEntry | None:
        """The cohort row of ``slide`` (default: the slide shown), matched by file path."""
        slide = slide or self.view.current_slide
        if slide is None:
            return None
        key = slide_path_key(slide.path)
        for entry in self.window.cohort_entries:
            if slide_path_key(entry.path) == key:
                return entry
        return None

    def _matches(self, heatmap: Heatmap, slide: SlideSource) -> bool:
        entry = self.cohort_entry(slide)
        names = {slide.path, Path(slide.path).name}
        if entry is not None:
            names.add(entry.slide)
        return heatmap.slide in names or Path(heatmap.slide).name == Path(slide.path).name

    def _on_slide_changed(self, slide: object) -> None:
        # The view cleared its scene: our items are gone with it.
        self.item = None
        self.outline_item = None
        self.status_label.setText("")
        if slide is None:
            return
        if self.pred_dir is not None:
            self._load_for_current_slide()
        elif self.heatmap is not None and not self._matches(self.heatmap, slide):  # type: ignore[arg-type]
            self.set_heatmap(None)
        else:
            self._add_items()

    def _load_for_current_slide(self) -> None:
        slide = self.view.current_slide
        if slide is None or self.pred_dir is None:
            return
        entry = self.cohort_entry(slide)
        path = find_heatmap(
            self.pred_dir, entry.slide if entry else None, slide.path, list(self._predictions)
        )
        if path is None:
            self.set_heatmap(None)
            self.source = f"no heatmap for {Path(slide.path).name} in {self.pred_dir.name}"
            self.heatmapChanged.emit(None)
            return
        try:
            heatmap = load_heatmap(path)
        except HeatmapError as error:
            log.warning("%s", error)
            self.set_heatmap(None)
            self.source = str(error)
            self.heatmapChanged.emit(None)
            return
        problem = self.misfit(heatmap)
        if problem:
            # Same file name, another slide (a cohort regenerated, a renamed copy): never draw
            # one slide's heatmap over another.
            log.warning("%s: %s", path, problem)
            self.set_heatmap(None)
            self.source = f"{path.name}: {problem}"
            self.heatmapChanged.emit(None)
            return
        self.set_heatmap(heatmap, source=f"{self.pred_dir.name}/{HEATMAPS}/{path.name}")

    def misfit(self, heatmap: Heatmap) -> str:
        """Why ``heatmap`` does not belong to the slide shown ("" when it does, or no slide)."""
        return heatmap_misfit(heatmap, self.view.current_slide)

    def _apply_predictions(self) -> None:
        if self._predictions and self.pred_dir is not None:
            self.window.scores.update(self._predictions, source=str(self.pred_dir))

    # -- scene items -------------------------------------------------------------------------

    def _remove_items(self) -> None:
        scene = self.view.scene()
        for item in (self.item, self.outline_item):
            # A slide change may already have deleted the items with the scene.
            if item is not None and isValid(item) and item.scene() is scene:
                scene.removeItem(item)
        self.item = None
        self.outline_item = None

    def _add_items(self) -> None:
        if self.view.current_slide is None:
            return
        if self.heatmap is not None and self.image is not None and self.item is None:
            item = HeatmapOverlay(self.image, self.heatmap.origin, self.heatmap.patch_size)
            item.smooth = self.display.smooth
            item.setVisible(self.display.visible)
            self.view.scene().addItem(item)
            self.item = item
        if self.display.outlines and self.outline_item is None:
            self._add_outlines()

    def _add_outlines(self) -> None:
        entry = self.cohort_entry()
        if entry is None or entry.annotations is None or self.view.current_slide is None:
            return
        path = self._annotation_cache.get(entry.annotations)
        if path is None:
            from pathviewer.core.annotations import is_tumour_class, read_geojson

            try:
                annotations = [
                    a for a in read_geojson(entry.annotations) if is_tumour_class(a.class_name)
                ]
            except PathViewerError as error:
                log.warning("tumour outlines unavailable: %s", error)
                return
            path = _outline_path(annotations)
            self._annotation_cache[entry.annotations] = path
        item = QGraphicsPathItem(path)
        pen = QPen(QColor(255, 255, 255), 2.0)
        pen.setCosmetic(True)  # same width on screen at every zoom
        pen.setStyle(Qt.PenStyle.DashLine)
        item.setPen(pen)
        item.setZValue(OUTLINE_Z)
        item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        item.setVisible(self.display.outlines)
        self.view.scene().addItem(item)
        self.outline_item = item

    # -- hover -------------------------------------------------------------------------------

    def _on_cursor(self, x: float, y: float) -> None:
        if self.heatmap is None or not self.display.visible:
            return
        value = self.heatmap.value_at(x, y)
        self.status_label.setText(
            f"heatmap: p = {value:.3f}" if math.isfinite(value) else "heatmap: not scored"
        )


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
        from pathviewer.gui.tiles import rgb_to_qimage

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
        bar.getAxis("bottom").setLabel("probability")
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
        path = QFileDialog.getExistingDirectory(window, "Predictions folder (pathviewer infer)")
    else:
        path, _ = QFileDialog.getOpenFileName(
            window,
            "Load heatmap",
            "",
            "Heatmap or predictions (*.npz slides.csv patches.csv prediction.json);;"
            "Patch values of other tools (*.geojson *.json *.csv);;All files (*)",
        )
    if not path:
        return
    try:
        controller.load_path(path)
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
    start = str(
        Path(window.slide_view.current_slide.path).parent / export_name(heatmap.slide, "qupath")
    )
    path, chosen = QFileDialog.getSaveFileName(
        window, "Export heatmap", start, ";;".join(EXPORT_FILTERS), first
    )
    if not path:
        return
    fmt = EXPORT_FILTERS.get(chosen, "qupath")
    if not path.endswith(EXPORT_FORMATS[fmt].rsplit(".", 1)[-1]):
        path = str(Path(path).with_suffix("")) + EXPORT_FORMATS[fmt]
    try:
        count = controller.export(path, fmt)
    except (PathViewerError, OSError) as error:
        QMessageBox.warning(window, "Export heatmap", f"{path}: {error}")
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
