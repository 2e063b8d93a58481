"""The annotation overlay of the slide view: one scene item that draws only what is visible.

Drawing strategy (so that 10,000 polygons stay fluid)
    * The visible annotations come from :meth:`AnnotationIndex.visible`, already simplified to
      half a screen pixel for the current zoom.
    * All visible regions of one class become **one** QPainterPath, built from numpy arrays in a
      single ``QDataStream`` read (no Python loop over vertices), and are drawn with one
      ``drawPath``.  The paths cover the viewport plus a margin and are reused while panning
      inside it at the same zoom; an edit or zoom change rebuilds them.
    * At very low zoom (downsample >= :data:`RASTER_DOWNSAMPLE`) or with more than
      :data:`RASTER_MAX_VISIBLE` annotations in view, a cached raster overview of the whole slide
      (longest side :data:`RASTER_SIZE` px) is drawn instead; an edit redraws only the dirty
      rectangle of that raster.

Everything is in level-0 pixels (the scene coordinates of the slide view).  Pens are cosmetic, so
outlines keep their screen width at every zoom.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import shapely
from PySide6.QtCore import QByteArray, QDataStream, QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotation_document import (
    MAX_HANDLES,
    AnnotationDocument,
    DocumentChange,
    handle_coordinates,
)
from pathviewer.core.annotations import Annotation
from pathviewer.session.display import AnnotationDisplay

#: z-value of the annotation layer (above the slide at 0 and heatmaps at ~1-5).
ANNOTATION_Z = 10.0

#: From this downsample (level-0 px per screen px) on, the raster overview is drawn.
RASTER_DOWNSAMPLE = 32.0

#: With more annotations than this in view, the raster overview is drawn.
RASTER_MAX_VISIBLE = 1500

#: Longest side of the raster overview image.
RASTER_SIZE = 4096

#: Side of a vertex handle in screen pixels.
HANDLE_PX = 7.0

#: Fill opacity of regions (0-255).
FILL_ALPHA = 60

DEFAULT_COLOR = (255, 200, 0)

_REGIONS = ("Polygon", "MultiPolygon")

_Paths = tuple[QPainterPath, QPainterPath, list[tuple[float, float]]]


def path_from_rings(coords: np.ndarray, ring_index: np.ndarray) -> QPainterPath:
    """One QPainterPath of many polylines, built from arrays without a Python loop over points.

    Parameters
    ----------
    coords
        ``(n, 2)`` float coordinates.
    ring_index
        ``(n,)`` integers; a new subpath starts wherever the index changes.

    Notes
    -----
    Uses QPainterPath's ``QDataStream`` format (count, then ``(type, x, y)`` per element with
    type 0 = MoveTo and 1 = LineTo, then the fill rule), the same trick pyqtgraph uses.
    """
    n = len(coords)
    path = QPainterPath()
    if n == 0:
        return path
    buffer = np.empty(4 + n * 20 + 8, dtype=np.uint8)
    buffer[:4] = np.frombuffer(np.array([n], dtype=">i4").tobytes(), np.uint8)
    elements = np.frombuffer(
        buffer[4 : 4 + n * 20].data, dtype=[("c", ">i4"), ("x", ">f8"), ("y", ">f8")]
    )
    starts = np.ones(n, dtype=bool)
    starts[1:] = ring_index[1:] != ring_index[:-1]
    elements["c"] = np.where(starts, 0, 1)
    elements["x"] = coords[:, 0]
    elements["y"] = coords[:, 1]
    # cStart 0 and Qt.WindingFill (1): overlapping regions stay filled, holes are oriented.
    buffer[4 + n * 20 :] = np.frombuffer(np.array([0, 1], dtype=">i4").tobytes(), np.uint8)
    stream = QDataStream(QByteArray(buffer.tobytes()))
    stream >> path
    return path


def geometries_to_paths(
    geometries: Iterable[BaseGeometry],
) -> tuple[QPainterPath, QPainterPath, list[tuple[float, float]]]:
    """``(regions, lines, points)``: filled-region path, stroke-only path and point positions."""
    geoms = np.array(list(geometries), dtype=object)
    if len(geoms) == 0:
        return QPainterPath(), QPainterPath(), []
    parts = shapely.get_parts(geoms)
    types = shapely.get_type_id(parts)
    polygons = parts[types == 3]
    lines = parts[(types == 1) | (types == 2)]
    points = parts[types == 0]
    if len(polygons):
        # Exterior counter-clockwise, holes clockwise: the winding fill then shows holes.
        polygons = shapely.orient_polygons(polygons)
        rings = shapely.get_rings(polygons)
        coords, index = shapely.get_coordinates(rings, return_index=True)
        regions = path_from_rings(coords, index)
    else:
        regions = QPainterPath()
    if len(lines):
        coords, index = shapely.get_coordinates(lines, return_index=True)
        line_path = path_from_rings(coords, index)
    else:
        line_path = QPainterPath()
    point_list = [(float(p.x), float(p.y)) for p in points]
    return regions, line_path, point_list


def paths_per_geometry(
    geometries: list[BaseGeometry],
) -> list[tuple[QPainterPath, QPainterPath, list[tuple[float, float]]]]:
    """:func:`geometries_to_paths` for each geometry, with one vectorised pass over all of them.

    Filling each region separately is much faster in Qt's raster engine than filling one path
    of many overlapping subpaths (whose winding fill is computed over all of them).
    """
    n = len(geometries)
    if n == 0:
        return []
    geoms = np.array(geometries, dtype=object)
    parts, owner = shapely.get_parts(geoms, return_index=True)
    types = shapely.get_type_id(parts)
    results: list[tuple[QPainterPath, QPainterPath, list[tuple[float, float]]]] = []
    region_parts = types == 3
    line_parts = (types == 1) | (types == 2)
    point_parts = types == 0
    per_owner_regions: list[np.ndarray] = [np.empty((0, 2))] * n
    per_owner_region_index: list[np.ndarray] = [np.empty(0, int)] * n
    if region_parts.any():
        polygons = shapely.orient_polygons(parts[region_parts])
        rings, ring_part = shapely.get_rings(polygons, return_index=True)
        coords, ring_of_coord = shapely.get_coordinates(rings, return_index=True)
        ring_owner = owner[region_parts][ring_part]
        coord_owner = ring_owner[ring_of_coord]
        bounds = np.searchsorted(coord_owner, np.arange(n + 1))
        for i in range(n):
            per_owner_regions[i] = coords[bounds[i] : bounds[i + 1]]
            per_owner_region_index[i] = ring_of_coord[bounds[i] : bounds[i + 1]]
    for i, geometry in enumerate(geometries):
        regions = (
            path_from_rings(per_owner_regions[i], per_owner_region_index[i])
            if len(per_owner_regions[i])
            else QPainterPath()
        )
        lines = QPainterPath()
        points: list[tuple[float, float]] = []
        if line_parts.any() or point_parts.any():
            if geometry.geom_type not in _REGIONS:
                _, lines, points = geometries_to_paths([geometry])
        results.append((regions, lines, points))
    return results


class AnnotationLayer(QGraphicsItem):
    """Scene item drawing a document's annotations, its selection, handles and the tool preview.

    The layer renders an :class:`~pathviewer.core.annotation_document.AnnotationDocument` and
    listens to it; :meth:`detach` stops listening (the view's scene is cleared on a slide change).

    Parameters
    ----------
    view
        The :class:`~pathviewer.gui.viewer.slide_view.SlideView` (for the zoom).
    size
        Slide size ``(width, height)`` in level-0 px.
    document
        What to draw (a new empty one by default).
    """

    def __init__(
        self, view: object, size: tuple[int, int], document: AnnotationDocument | None = None
    ) -> None:
        super().__init__()
        self._view = view
        width, height = size
        self._slide_rect = QRectF(0, 0, width, height)
        # Annotations may extend past the slide; a generous margin keeps them repainted.
        self._rect = self._slide_rect.adjusted(-width, -height, width, height)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(ANNOTATION_Z)
        self.document = document if document is not None else AnnotationDocument()
        self.palette: dict[str, tuple[int, int, int]] = {}
        #: What is drawn: all, filled, which classes (see :meth:`set_display`).
        self.display = AnnotationDisplay()
        #: Geometry drawn instead of the selected annotation while it is dragged.
        self.override: BaseGeometry | None = None
        #: The tool's preview: a path in level-0 px and whether it is a brush stroke.
        self.preview: QPainterPath | None = None
        self.preview_brush_width = 0.0
        self.preview_erase = False
        # Per-geometry paths by (key, simplification level), and the per-class lists of them
        # for the viewport plus a margin.
        self._geom_paths: dict[tuple[int, int], _Paths] = {}
        self._paths: dict[str, list[tuple[float, float, float, float, _Paths]]] = {}
        self._paths_rect = QRectF()
        self._paths_level: int | None = None
        self._raster: QImage | None = None
        self._raster_scale = 1.0
        self._raster_dirty: list[QRectF] = []
        self._raster_mipmaps: list[QImage] = []
        #: Frames painted and how (benchmarks/tests): "vector" or "raster".
        self.last_mode = ""
        self.paint_count = 0
        self._unsubscribe = self.document.subscribe(self._on_document_changed)

    def detach(self) -> None:
        """Stop rendering the document (before the scene item is deleted)."""
        self._unsubscribe()

    @property
    def annotations(self) -> Mapping[int, Annotation]:
        """The document's annotations (read-only)."""
        return self.document.annotations

    @property
    def selected(self) -> int | None:
        """The document's selection."""
        return self.document.selected

    # -- content -----------------------------------------------------------------------------

    def _on_document_changed(self, change: DocumentChange) -> None:
        if change.kind == "reset":
            self._geom_paths.clear()
            self._paths.clear()
            self._paths_rect = QRectF()
            self._raster = None
        elif change.kind == "annotation":
            dirty = QRectF()
            for annotation in (change.old, change.new):
                if annotation is not None:
                    dirty = dirty.united(_bounds(annotation.geometry))
            for cache_key in [k for k in self._geom_paths if k[0] == change.annotation_id]:
                del self._geom_paths[cache_key]
            self._paths.clear()
            self._paths_rect = QRectF()
            if self._raster is not None and not dirty.isEmpty():
                self._raster_dirty.append(dirty)
        else:
            # The selection is drawn on top, and left out of the cached paths while dragged.
            self.override = None
            self._paths.clear()
            self._paths_rect = QRectF()
        self.update()

    def set_palette(self, palette: dict[str, tuple[int, int, int]]) -> None:
        """Class colours (name -> RGB)."""
        self.palette = dict(palette)
        self._paths.clear()
        self._paths_rect = QRectF()
        self._raster = None
        self.update()

    def set_display(self, display: AnnotationDisplay) -> None:
        """Show all, some classes or no annotations, filled or as outlines."""
        if display == self.display:
            return
        self.display = display
        self._paths.clear()
        self._paths_rect = QRectF()
        self._raster = None
        self.update()

    def shows(self, annotation_id: Hashable) -> bool:
        """Whether the annotation ``annotation_id`` is drawn (hidden ones cannot be picked)."""
        annotation = self.annotations.get(annotation_id)  # type: ignore[call-overload]
        return annotation is not None and self.display.shows(annotation.class_name)

    def shows_annotation(self, annotation: Annotation) -> bool:
        """Whether an annotation of this class is drawn."""
        return self.display.shows(annotation.class_name)

    def color_of(self, annotation: Annotation) -> tuple[int, int, int]:
        """Display colour: the class's palette colour, else the annotation's own, else yellow."""
        if annotation.class_name in self.palette:
            return self.palette[annotation.class_name]
        return annotation.color or DEFAULT_COLOR

    def _class_key(self, annotation: Annotation) -> str:
        r, g, b = self.color_of(annotation)
        return f"{r},{g},{b}"

    # -- geometry helpers ------------------------------------------------------------------

    def downsample(self) -> float:
        """Level-0 px per screen px at the current zoom."""
        return 1.0 / max(self._view.scale_factor(), 1e-9)  # type: ignore[attr-defined]

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect

    # -- painting ----------------------------------------------------------------------------

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        self.paint_count += 1
        exposed = option.exposedRect
        if not self.display.visible:
            self.last_mode = "hidden"
            self._paint_preview(painter)  # a shape being drawn stays visible
            return
        downsample = self.downsample()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, downsample < 8)
        use_raster = downsample >= RASTER_DOWNSAMPLE
        if not use_raster:
            use_raster = not self._ensure_paths(exposed, downsample)
        if use_raster:
            self.last_mode = "raster"
            self._paint_raster(painter, exposed)
        else:
            self.last_mode = "vector"
            self._paint_paths(painter, exposed)
        self._paint_selection(painter, downsample)
        self._paint_preview(painter)

    def _ensure_paths(self, exposed: QRectF, downsample: float) -> bool:
        """Collect the per-geometry paths around ``exposed``; False when too many are visible."""
        level = int(math.floor(math.log2(max(downsample / 2.0, 1.0))))
        view_rect = self._view.visible_level0_rect()  # type: ignore[attr-defined]
        in_view = self.document.index.query(
            (view_rect.left(), view_rect.top(), view_rect.right(), view_rect.bottom())
        )
        if len(in_view) > RASTER_MAX_VISIBLE:
            return False
        if (
            self._paths_level == level
            and not self._paths_rect.isEmpty()
            and self._paths_rect.contains(exposed)
        ):
            return True
        rect = view_rect.united(exposed)
        margin_x, margin_y = rect.width() * 0.25, rect.height() * 0.25
        rect = rect.adjusted(-margin_x, -margin_y, margin_x, margin_y)
        bbox = (rect.left(), rect.top(), rect.right(), rect.bottom())
        visible = [
            (k, g)
            for k, g in self.document.index.visible(bbox, downsample)
            if not (k == self.selected and self.override is not None) and self.shows(k)
        ]
        missing = [(k, g) for k, g in visible if (k, level) not in self._geom_paths]
        if len(self._geom_paths) + len(missing) > 50_000:  # bound memory over long sessions
            self._geom_paths.clear()
            missing = visible
        for (key, _), paths in zip(
            missing, paths_per_geometry([g for _, g in missing]), strict=True
        ):
            self._geom_paths[(key, level)] = paths  # type: ignore[index]
        groups: dict[str, list[tuple[float, float, float, float, _Paths]]] = {}
        bounds = shapely.bounds(np.array([g for _, g in visible], dtype=object)).reshape(-1, 4)
        for (key, _), (x0, y0, x1, y1) in zip(visible, bounds.tolist(), strict=True):
            groups.setdefault(self._class_key(self.annotations[key]), []).append(  # type: ignore[index]
                (x0, y0, x1, y1, self._geom_paths[(key, level)])  # type: ignore[index]
            )
        self._paths = groups
        self._paths_rect = rect
        self._paths_level = level
        return True

    def invalidate_paths(self) -> None:
        """Forget the cached paths (the selection's drag override changed)."""
        self._paths.clear()
        self._paths_rect = QRectF()
        self.update()

    def _paint_paths(self, painter: QPainter, exposed: QRectF) -> None:
        downsample = self.downsample()
        # Cull to the exposed area (the cached lists cover a margin around the view).
        pad = 8.0 * downsample
        left, top = exposed.left() - pad, exposed.top() - pad
        right, bottom = exposed.right() + pad, exposed.bottom() + pad
        culled = {
            key: [
                e[4]
                for e in entries
                if e[2] >= left and e[0] <= right and e[3] >= top and e[1] <= bottom
            ]
            for key, entries in self._paths.items()
        }
        count = sum(len(v) for v in culled.values())
        for key, entries in culled.items():
            r, g, b = (int(c) for c in key.split(","))
            # Fill each region on its own without antialiasing (Qt fills one big path of
            # overlapping subpaths far more slowly), then outline with a hairline pen: a
            # 0-width cosmetic pen takes Qt's fast stroker, wider pens a slow general one.
            if self.display.filled:
                painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(QColor(r, g, b, FILL_ALPHA))
                for regions, _, _ in entries:
                    painter.drawPath(regions)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, count < 1500)
            pen = QPen(QColor(r, g, b), 0.0)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            line_pen = QPen(QColor(r, g, b), 2.0)  # lines are few: the wider pen is affordable
            line_pen.setCosmetic(True)
            for regions, lines, points in entries:
                painter.drawPath(regions)
                if not lines.isEmpty():
                    painter.setPen(line_pen)
                    painter.drawPath(lines)
                    painter.setPen(pen)
                if points:
                    painter.setBrush(QColor(r, g, b))
                    radius = 5.0 * downsample
                    for x, y in points:
                        painter.drawEllipse(QPointF(x, y), radius, radius)
                    painter.setBrush(Qt.BrushStyle.NoBrush)

    def _paint_raster(self, painter: QPainter, exposed: QRectF) -> None:
        if self._raster is None:
            self._build_raster()
            self._raster_mipmaps = []
        elif self._raster_dirty:
            for rect in self._raster_dirty:
                self._render_raster_rect(rect)
            self._raster_dirty.clear()
            self._raster_mipmaps = []
        assert self._raster is not None
        if not self._raster_mipmaps:
            # Halvings of the overview, so a zoomed-out frame scales a small image, not 4096 px.
            mipmaps = [self._raster]
            while min(mipmaps[-1].width(), mipmaps[-1].height()) > 256:
                last = mipmaps[-1]
                mipmaps.append(
                    last.scaled(
                        last.width() // 2,
                        last.height() // 2,
                        Qt.AspectRatioMode.IgnoreAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                )
            self._raster_mipmaps = mipmaps
        screen_scale = 1.0 / self.downsample()
        image = self._raster_mipmaps[0]
        s = self._raster_scale
        for candidate in self._raster_mipmaps[1:]:
            candidate_scale = self._raster_scale * candidate.width() / self._raster.width()
            if candidate_scale < screen_scale:
                break
            image, s = candidate, candidate_scale
        target = exposed.intersected(self._slide_rect)
        if target.isEmpty():
            return
        source = QRectF(target.x() * s, target.y() * s, target.width() * s, target.height() * s)
        painter.drawImage(target, image, source)

    def _build_raster(self) -> None:
        width, height = self._slide_rect.width(), self._slide_rect.height()
        scale = min(1.0, RASTER_SIZE / max(width, height, 1.0))
        self._raster_scale = scale
        image = QImage(
            max(1, math.ceil(width * scale)),
            max(1, math.ceil(height * scale)),
            QImage.Format.Format_ARGB32_Premultiplied,
        )
        image.fill(Qt.GlobalColor.transparent)
        self._raster = image
        self._raster_dirty.clear()
        self._render_raster_rect(self._slide_rect)

    def _render_raster_rect(self, rect: QRectF) -> None:
        """Redraw the part of the raster overview under ``rect`` (level-0 px)."""
        assert self._raster is not None
        s = self._raster_scale
        pad = 3.0 / s  # outlines spill over the bounding box by their width
        rect = rect.adjusted(-pad, -pad, pad, pad).intersected(self._slide_rect)
        if rect.isEmpty():
            return
        painter = QPainter(self._raster)
        painter.scale(s, s)
        painter.setClipRect(rect)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.fillRect(rect, Qt.GlobalColor.transparent)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceOver)
        groups: dict[str, list[BaseGeometry]] = {}
        bbox = (rect.left(), rect.top(), rect.right(), rect.bottom())
        for key, geometry in self.document.index.visible(bbox, 1.0 / s):
            if not self.shows(key):
                continue
            groups.setdefault(self._class_key(self.annotations[key]), []).append(geometry)  # type: ignore[index]
        for key, geoms in groups.items():
            r, g, b = (int(c) for c in key.split(","))
            regions, lines, points = geometries_to_paths(geoms)
            pen = QPen(QColor(r, g, b), 0.0)  # hairline: Qt's fast stroker
            pen.setCosmetic(True)
            painter.setPen(pen)
            if self.display.filled:
                painter.setBrush(QColor(r, g, b, FILL_ALPHA + 40))
            else:
                painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(regions)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(lines)
            painter.setBrush(QColor(r, g, b))
            for x, y in points:
                painter.drawEllipse(QPointF(x, y), 3.0 / s, 3.0 / s)
        painter.end()

    def _paint_selection(self, painter: QPainter, downsample: float) -> None:
        if self.selected is None or self.selected not in self.annotations:
            return
        annotation = self.annotations[self.selected]
        geometry = self.override if self.override is not None else annotation.geometry
        r, g, b = self.color_of(annotation)
        regions, lines, points = geometries_to_paths([geometry])
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        halo = QPen(QColor(255, 255, 255), 5.0)
        halo.setCosmetic(True)
        painter.setPen(halo)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(regions)
        painter.drawPath(lines)
        pen = QPen(QColor(r, g, b), 2.5)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(QColor(r, g, b, FILL_ALPHA + 30))
        painter.drawPath(regions)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(lines)
        for x, y in points:
            painter.setBrush(QColor(r, g, b))
            painter.setPen(halo)
            painter.drawEllipse(QPointF(x, y), 6.0 * downsample, 6.0 * downsample)
        coords = handle_coordinates(geometry)
        if 0 < len(coords) <= MAX_HANDLES:
            side = HANDLE_PX * downsample
            border = QPen(QColor(20, 20, 20), 1.0)
            border.setCosmetic(True)
            painter.setPen(border)
            painter.setBrush(QBrush(QColor(255, 255, 255)))
            for x, y in coords:
                painter.drawRect(QRectF(x - side / 2, y - side / 2, side, side))

    def _paint_preview(self, painter: QPainter) -> None:
        if self.preview is None:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.preview_brush_width > 0:
            color = QColor(255, 255, 255, 110) if self.preview_erase else QColor(255, 230, 0, 110)
            pen = QPen(color, self.preview_brush_width)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        else:
            pen = QPen(QColor(255, 230, 0), 2.0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.preview)


def _bounds(geometry: BaseGeometry) -> QRectF:
    x0, y0, x1, y1 = geometry.bounds
    return QRectF(x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0))
