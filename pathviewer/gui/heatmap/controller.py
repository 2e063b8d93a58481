"""The heatmap of the slide shown: :class:`HeatmapController`.

``window.context.heatmap`` owns the heatmap over the open slide, its overlay items and its
display state (:class:`~pathviewer.session.heatmap.HeatmapDisplay`).  API for other features:

- ``set_heatmap(heatmap)`` shows a :class:`~pathviewer.core.heatmap.Heatmap` over the open slide
  (None removes it).
- ``update_patches(rows, cols, probs)`` fills cells in place (progressive inference: call
  ``set_heatmap`` once with an all-NaN grid, then this from the worker's signals; only the
  changed rectangle is re-quantised and repainted).
- ``load_path(path)`` loads a predictions folder written by ``pathviewer infer`` (``PRED_DIR``
  with ``slides.csv`` and ``heatmaps/<slide stem>.npz``) or a single ``.npz``.  With a folder,
  the heatmap follows the slide shown and the cohort panel gets the slide scores.
- ``set_display(display)`` and the intents ``set_colormap``, ``set_opacity``, ``set_threshold``,
  ``set_visible``, ``set_smooth``, ``set_outlines_visible``; ``top_regions()``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QPainterPath,
    QPen,
)
from PySide6.QtWidgets import (
    QGraphicsPathItem,
    QLabel,
)

from pathviewer.core.annotations import qupath_offset
from pathviewer.core.errors import PathViewerError
from pathviewer.core.heatmap import Heatmap, HeatmapError, load_heatmap
from pathviewer.core.heatmap_export import (
    HeatmapImportOptions,
    foreign_heatmap_kind,
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
from pathviewer.gui.heatmap.overlay import (
    OUTLINE_Z,
    HeatmapOverlay,
    color_table,
    heatmap_image,
    outline_path,
    quantise,
)
from pathviewer.session.heatmap import (
    HeatmapDisplay,
    Region,
    find_regions,
    heatmap_misfit,
    read_prediction_folder,
)

if TYPE_CHECKING:
    from pathviewer.core.cohort import CohortEntry
    from pathviewer.core.slide import SlideSource
    from pathviewer.gui.heatmap.dock import ColorLegend
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.ml.similar import SimilarPatch


log = logging.getLogger(__name__)

#: QSettings key of the remembered heatmap display (JSON of ``HeatmapDisplay.remembered()``).
DISPLAY_SETTING = "heatmap/display"


def _remembered_display(window: MainWindow) -> object:
    try:
        return json.loads(str(window.settings.value(DISPLAY_SETTING, "{}")))
    except ValueError:
        return {}


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
        self.display = HeatmapDisplay.from_remembered(_remembered_display(window))
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

    def load_path(self, path: str | Path, patch_size: int | None = None) -> None:
        """Load a predictions folder (``slides.csv``, ``heatmaps/``) or one heatmap ``.npz``.

        A file inside a predictions folder (``slides.csv``, ``patches.csv``...) loads the folder;
        another tool's patch scores (QuPath tiles, CSV, CLAM ``.h5``, Slideflow ``.npz``) load
        onto the open slide, with ``patch_size`` (level-0 px) when the file does not say it.

        Raises
        ------
        HeatmapError
            Not a heatmap / predictions folder, or a corrupt file.
        """
        path = Path(path)
        if path.is_file() and foreign_heatmap_kind(path) is not None:
            self._load_patch_table(path, patch_size)
            return
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

    def _load_patch_table(self, path: Path, patch_size: int | None = None) -> None:
        """Another tool's per-patch values (QuPath tiles, x,y,width,height,value CSV, CLAM h5,
        Slideflow npz) on the open slide."""
        slide = self.view.current_slide
        if slide is None:
            raise HeatmapError(f"{path}: open the slide these patches belong to first")
        entry = self.cohort_entry(slide)
        options = HeatmapImportOptions(
            level_downsamples=tuple(slide.level_downsamples),
            patch_size=patch_size,
            qupath_offset=qupath_offset(slide.properties),
        )
        heatmap = read_heatmap_file(
            path, entry.slide if entry else slide.path, slide.dimensions, options
        )
        self.pred_dir = None
        self.operating_point = None
        self.model_path = None
        self.set_heatmap(heatmap, source=path.name)

    def provenance(self) -> str:
        """What an exported figure says about the heatmap on it ('' when none is shown)."""
        heatmap, d = self.heatmap, self.display
        if heatmap is None or not d.visible:
            return ""
        made_by = self.model_path.parent.name if self.model_path is not None else self.source
        method = f" ({heatmap.method})" if heatmap.method else ""
        return f"heatmap {made_by}{method}, threshold {d.threshold:.2f}, colormap {d.colormap}" + (
            ", smooth" if d.smooth else ""
        )

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
            if old.remembered() != display.remembered():
                self.window.settings.setValue(DISPLAY_SETTING, json.dumps(display.remembered()))
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
        # The view detached our items with the old slide; the new slide gets its own.
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
        for item in (self.item, self.outline_item):
            self.view.remove_overlay(item)
        self.item = None
        self.outline_item = None

    def _add_items(self) -> None:
        if self.view.current_slide is None:
            return
        if self.heatmap is not None and self.image is not None and self.item is None:
            item = HeatmapOverlay(self.image, self.heatmap.origin, self.heatmap.patch_size)
            item.smooth = self.display.smooth
            item.setVisible(self.display.visible)
            self.view.add_overlay(item)
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
            path = outline_path(annotations)
            self._annotation_cache[entry.annotations] = path
        item = QGraphicsPathItem(path)
        pen = QPen(QColor(255, 255, 255), 2.0)
        pen.setCosmetic(True)  # same width on screen at every zoom
        pen.setStyle(Qt.PenStyle.DashLine)
        item.setPen(pen)
        item.setZValue(OUTLINE_Z)
        item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        item.setVisible(self.display.outlines)
        self.view.add_overlay(item)
        self.outline_item = item

    # -- hover -------------------------------------------------------------------------------

    def _on_cursor(self, x: float, y: float) -> None:
        if self.heatmap is None or not self.display.visible:
            return
        value = self.heatmap.value_at(x, y)
        self.status_label.setText(
            f"heatmap: p = {value:.3f}" if math.isfinite(value) else "heatmap: not scored"
        )
