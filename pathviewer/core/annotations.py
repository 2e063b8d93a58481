"""Region annotations and QuPath-compatible GeoJSON.

An :class:`Annotation` is a shapely geometry in level-0 pixels with a class name and colour.
GeoJSON follows QuPath's export: a ``FeatureCollection`` whose features carry
``properties.objectType`` (``annotation``, ``detection`` or ``tile``) and
``properties.classification = {"name": ..., "color": [r, g, b]}``.

Import is all-or-nothing: a malformed feature raises
:class:`~pathviewer.core.errors.AnnotationError` naming the feature, and nothing is returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import make_valid

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import AnnotationError, shown

#: Default class palette (name -> RGB), shared by the synthetic cohort, the GUI and exports.
DEFAULT_CLASSES: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Normal": (0, 150, 0),
    "Stroma": (150, 200, 150),
    "Other": (90, 90, 200),
}


#: Largest magnitude of an annotation coordinate, in level-0 pixels, that readers accept.  The
#: largest slides are about 2e5 px across; 1e9 leaves room for any offset or drawing beyond the
#: edge, while keeping areas (at most 4e18 px^2) and every format's numbers finite.  A file with
#: 1e308 is damaged, and would otherwise turn into an infinite area or a file no reader takes.
MAX_COORDINATE_PX = 1e9


def check_coordinates(coordinates: Any, where: str) -> None:
    """Refuse coordinates that are not finite or lie beyond :data:`MAX_COORDINATE_PX`.

    The one rule every annotation reader applies to what it read.

    Parameters
    ----------
    coordinates
        ``(N, 2)`` level-0 pixel coordinates (a list of pairs or an array), or a shapely
        geometry.
    where
        Names the annotation in the error (``file annotation 3 ("Tumour 1")``).

    Raises
    ------
    AnnotationError
        One line naming the annotation and the first bad coordinate.
    """
    if isinstance(coordinates, BaseGeometry):
        values = shapely.get_coordinates(coordinates)
    else:
        values = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(values).all():  # NaN or infinite (json accepts NaN)
        raise AnnotationError(f"{where}: coordinates are not finite numbers")
    beyond = (np.abs(values) > MAX_COORDINATE_PX).any(axis=1)
    if beyond.any():
        x, y = values[int(np.argmax(beyond))]
        raise AnnotationError(
            f"{where}: coordinate ({x:g}, {y:g}) lies beyond \u00b1{MAX_COORDINATE_PX:g} px,"
            " far outside any slide"
        )


#: Annotation classes counted as tumour (case-insensitive); see :func:`is_tumour_class`.
TUMOUR_CLASSES = ("tumor", "tumour", "positive", "cancer", "metastasis")


def is_tumour_class(class_name: str | None) -> bool:
    """Whether an annotation of this class marks tumour (ground truth, heatmap outlines).

    Unclassified regions count (CAMELYON16-style files outline only tumour), and a QuPath
    derived class counts by its base (``Tumor: Positive`` is ``Tumor``).
    """
    if class_name is None or not class_name.strip():
        return True
    return class_name.split(":")[0].strip().lower() in TUMOUR_CLASSES


@dataclass
class Annotation:
    """One region (or point/line) annotation in level-0 pixel coordinates.

    Attributes
    ----------
    geometry
        A shapely geometry (Polygon, MultiPolygon, LineString, Point...).
    class_name
        Classification name (``Tumor``...), or None for unclassified.
    color
        RGB colour of the class, or None for the default.
    name
        Optional display name.
    object_type
        QuPath object type: ``annotation``, ``detection`` or ``tile``.
    measurements
        Numbers attached to the object (e.g. ``{"prob": 0.93}`` for exported predictions).
    uid
        The object's identifier (QuPath writes a UUID as the feature ``id``), kept through
        import and export; None when the file had none.
    locked
        QuPath's ``isLocked``: the annotator froze the shape.
    metadata
        QuPath's key-value ``metadata`` of the object.
    object_color
        QuPath's ``properties.color``: the object's own colour, which QuPath draws instead of
        its class colour; None when the file gave none.
    """

    geometry: BaseGeometry
    class_name: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)
    uid: str | None = None
    locked: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    object_color: tuple[int, int, int] | None = None


def valid_rgb(value: Any) -> tuple[int, int, int] | None:
    """A colour as ``(r, g, b)`` integers in 0-255, or None when ``value`` is not one.

    The one rule for colours: files (GeoJSON, ASAP XML) and the project store all go through it,
    so a colour that was accepted can always be stored and read back.

    Parameters
    ----------
    value
        A sequence whose first three items are finite numbers in 0-255 (an alpha is ignored).
        Fractions are truncated, as QuPath does.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) < 3:
        return None
    components = value[:3]
    if not all(
        isinstance(c, int | float)
        and not isinstance(c, bool)
        and math.isfinite(c)
        and 0 <= c <= 255
        for c in components
    ):
        return None
    return (int(components[0]), int(components[1]), int(components[2]))


def rgb_from_hex(text: str | None) -> tuple[int, int, int] | None:
    """``#rrggbb`` (the ``#`` optional, spaces around ignored) as RGB, or None if it is not one."""
    if not isinstance(text, str):
        return None
    digits = text.strip().removeprefix("#")
    # int(_, 16) alone would accept "-5" or "+1", so check the digits themselves.
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def _parse_color(value: Any, where: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):  # QuPath's packed ARGB integer
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    rgb = valid_rgb(value)
    if rgb is None:
        raise AnnotationError(
            f"{where}: colour {shown(value)} is not [r, g, b] with components 0-255"
        )
    return rgb


def annotation_from_feature(feature: Any, where: str) -> Annotation:
    """Build an :class:`Annotation` from one GeoJSON feature; ``where`` names it in errors."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AnnotationError(f"{where}: not a GeoJSON Feature")
    geometry_json = feature.get("geometry")
    if not isinstance(geometry_json, dict):
        raise AnnotationError(f"{where}: has no geometry")
    try:
        geometry = shape(geometry_json)
    except Exception as error:
        raise AnnotationError(
            f"{where}: invalid {geometry_json.get('type', 'geometry')} ({error})"
        ) from None
    if geometry.is_empty:
        raise AnnotationError(f"{where}: empty geometry")
    check_coordinates(geometry, where)
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise AnnotationError(f"{where}: properties is not an object")
    classification = properties.get("classification")
    class_name: str | None = None
    color = None
    if isinstance(classification, dict):
        class_name = classification.get("name")
        names = classification.get("names")
        if class_name is None and isinstance(names, list) and names:
            # QuPath's derived classes: ["Tumor", "Positive"] is "Tumor: Positive"
            class_name = ": ".join(str(n) for n in names)
        color = _parse_color(classification.get("color", classification.get("colorRGB")), where)
    elif isinstance(classification, str):
        class_name = classification
    measurements_raw = properties.get("measurements") or {}
    measurements: dict[str, float] = {}
    if isinstance(measurements_raw, dict):
        measurements = {
            str(k): float(v) for k, v in measurements_raw.items() if isinstance(v, int | float)
        }
    elif isinstance(measurements_raw, list):  # older QuPath: [{"name":..., "value":...}]
        for m in measurements_raw:
            if isinstance(m, dict) and "name" in m:
                try:
                    measurements[str(m["name"])] = float(m.get("value"))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise AnnotationError(
                        f"{where}: measurement {shown(m['name'])} has the value"
                        f" {shown(m.get('value'))}, not a number"
                    ) from None
    if class_name is not None and not isinstance(class_name, str):
        raise AnnotationError(f"{where}: classification name {shown(class_name)} is not text")
    name = properties.get("name")
    uid = feature.get("id")
    metadata_raw = properties.get("metadata") or {}
    if not isinstance(metadata_raw, dict):
        raise AnnotationError(f"{where}: metadata is not an object")
    object_color = _parse_color(properties.get("color"), where)
    # TIAToolbox writes objectType on the feature, QuPath inside properties.
    object_type = properties.get("objectType", feature.get("objectType", "annotation"))
    return Annotation(
        geometry=geometry,
        class_name=class_name,
        color=color,
        name=None if name is None else str(name),
        object_type=str(object_type),
        measurements=measurements,
        uid=None if uid is None else str(uid),
        locked=bool(properties.get("isLocked", False)),
        metadata={str(k): str(v) for k, v in metadata_raw.items()},
        object_color=object_color,
    )


#: Characters of GeoJSON text read at a time; a feature longer than this is read in several.
_CHUNK_CHARS = 1 << 22
_NOT_JSON_SPACE = re.compile(r"[^ \t\n\r]")


class _JsonSyntaxError(ValueError):
    """Not JSON, worded as :class:`json.JSONDecodeError` words it (place in the whole file)."""


class _JsonStream:
    """The values of a JSON text, read from a stream one at a time.

    Only the outermost object or array is walked here (its brackets, keys, colons and commas);
    every value inside it is parsed by :mod:`json` itself (``raw_decode``), so the rules are the
    standard library's: ``NaN``/``Infinity``, the integer digit limit, the nesting limit, the
    last of duplicate keys.  A value cut by the end of what has been read is parsed again with
    more text, so only one value (one feature) is in memory at a time, whatever the file size.
    """

    def __init__(self, text: IO[str], chunk: int | None = None) -> None:
        self._text = text
        self._chunk = _CHUNK_CHARS if chunk is None else chunk
        self._decoder = json.JSONDecoder()
        self.buffer = ""
        self.pos = 0
        self._eof = False
        self._base = 0  # characters of the file before ``buffer``
        self._lines = 0  # line breaks before ``buffer``
        self._line_start = 0  # where the line that ``buffer`` starts in begins, in the file

    def _read_more(self) -> bool:
        """Drop what has been parsed and read more (at least as much as is held); False at EOF."""
        if self._eof:
            return False
        lines = self.buffer.count("\n", 0, self.pos)
        if lines:
            self._line_start = self._base + self.buffer.rfind("\n", 0, self.pos) + 1
        self._lines += lines
        self._base += self.pos
        rest = self.buffer[self.pos :]
        chunk = self._text.read(max(self._chunk, len(rest)))
        self._eof = not chunk
        self.buffer, self.pos = rest + chunk, 0
        return not self._eof

    def error(self, message: str, pos: int | None = None) -> _JsonSyntaxError:
        """``message`` at ``pos`` of the buffer, placed by line, column and character in the file."""
        pos = self.pos if pos is None else pos
        where = self._base + pos
        last_break = self.buffer.rfind("\n", 0, pos)
        line_start = self._line_start if last_break < 0 else self._base + last_break + 1
        line = self._lines + self.buffer.count("\n", 0, pos) + 1
        return _JsonSyntaxError(
            f"{message}: line {line} column {where - line_start + 1} (char {where})"
        )

    def peek(self) -> str:
        """The next character that is not JSON white space (``""`` at the end); not consumed."""
        while True:
            found = _NOT_JSON_SPACE.search(self.buffer, self.pos)
            if found is not None:
                self.pos = found.start()
                return self.buffer[self.pos]
            self.pos = len(self.buffer)
            if not self._read_more():
                return ""

    def value(self) -> Any:
        """The JSON value at the current position (after :meth:`peek`)."""
        while True:
            start = self.pos
            try:
                value, end = self._decoder.raw_decode(self.buffer, start)
            except ValueError as error:  # JSONDecodeError, or a number of over 4,300 digits
                offset = getattr(error, "pos", start) - start  # reading more moves the value
                if self._read_more():
                    continue  # perhaps only cut short by the end of the buffer
                if isinstance(error, json.JSONDecodeError):
                    raise self.error(error.msg, self.pos + offset) from None
                raise
            # A value that ends the buffer may go on (a number): decide with more text.
            if end < len(self.buffer) or not self._read_more():
                self.pos = end
                return value

    def items(self) -> Iterator[Any]:
        """The values of the array at the current position, one at a time."""
        self.pos += 1  # "["
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            self.peek()
            yield self.value()
            following = self.peek()
            self.pos += 1
            if following == "]":
                return
            if following != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)

    def keys(self) -> Iterator[str]:
        """The keys of the object at the current position; the caller reads each value."""
        self.pos += 1  # "{"
        following = self.peek()
        if following == "}":
            self.pos += 1
            return
        while True:
            if following != '"':
                raise self.error("Expecting property name enclosed in double quotes")
            key = self.value()
            if self.peek() != ":":
                raise self.error("Expecting ':' delimiter")
            self.pos += 1
            self.peek()
            yield key
            following = self.peek()
            self.pos += 1
            if following == "}":
                return
            if following != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)
            following = self.peek()


@dataclass
class _ReadFeatures:
    """A features array, already made into annotations as it was read."""

    annotations: list[Annotation]
    error: AnnotationError | None  # the first feature that could not be, raised at the end


def _read_features(features: Iterator[Any], path: Path) -> _ReadFeatures:
    annotations: list[Annotation] = []
    error: AnnotationError | None = None
    for index, feature in enumerate(features):
        if error is not None:
            continue  # the rest is still parsed: a file that is not JSON is reported as such
        try:
            annotations.append(annotation_from_feature(feature, f"{path} feature {index}"))
        except AnnotationError as bad:
            error, annotations = bad, []
        except RecursionError:  # a value nested nearly as deep as json allows
            error = AnnotationError(f"{path}: JSON nested too deeply to be annotations")
            annotations = []
    return _ReadFeatures(annotations, error)


def _parse_geojson(stream: _JsonStream, path: Path) -> list[Annotation]:
    """Annotations of a GeoJSON text, its features made one at a time (see :func:`read_geojson`)."""
    first = stream.peek()
    data: Any
    if first == "{":
        data = {}
        for key in stream.keys():
            if key == "features" and stream.peek() == "[":
                data[key] = _read_features(stream.items(), path)
            else:
                data[key] = stream.value()
    elif first == "[":
        data = _read_features(stream.items(), path)
    else:
        data = stream.value()
    if stream.peek():
        raise stream.error("Extra data")
    # The whole file is JSON: now the same checks, in the same order, as for a parsed document.
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, list | _ReadFeatures):
        features = data
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        raise AnnotationError(f"{path}: not a GeoJSON FeatureCollection")
    if isinstance(features, _ReadFeatures):
        if features.error is not None:
            raise features.error
        return features.annotations
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: 'features' is not a list")
    return [annotation_from_feature(f, f"{path} feature {i}") for i, f in enumerate(features)]


def read_geojson(path: str | os.PathLike[str]) -> list[Annotation]:
    """Read a QuPath GeoJSON file (FeatureCollection, a list of features, or one feature).

    The file is read as a stream and each feature becomes an :class:`Annotation` as soon as it
    is read, so memory follows the annotations, not the JSON document.

    Raises
    ------
    AnnotationError
        File missing or not JSON, or a malformed feature (named by its index); nothing is returned.
    """
    path = Path(path)
    try:
        with contextlib.ExitStack() as stack:
            binary: IO[bytes] | gzip.GzipFile = stack.enter_context(path.open("rb"))
            if path.suffix.lower() == ".gz":
                binary = stack.enter_context(gzip.GzipFile(fileobj=binary, mode="rb"))
            # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the JSON.
            text = stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""))
            return _parse_geojson(_JsonStream(text), path)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a folder, not an annotation file") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply to be annotations") from None
    except (ValueError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers of over 4,300 digits.
        raise AnnotationError(f"{path}: not a JSON file ({shown(str(error), 120)})") from None


def valid_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """Repair an invalid polygon with shapely (self-intersections become valid multipolygons)."""
    if geometry.is_valid:
        return geometry
    repaired = make_valid(geometry)
    if repaired.geom_type == "GeometryCollection":
        polygons = [g for g in repaired.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        if polygons:
            repaired = shapely.union_all(polygons)
    return repaired


def feature_from_annotation(annotation: Annotation) -> dict[str, Any]:
    """GeoJSON feature in QuPath's layout for one annotation.

    The geometry is written as drawn, even when it self-intersects: a conversion must not
    change shapes. Areas, unions and masks repair a copy (:func:`valid_geometry`).
    """
    properties: dict[str, Any] = {"objectType": annotation.object_type}
    if annotation.name:
        properties["name"] = annotation.name
    if annotation.object_color is not None:
        properties["color"] = list(annotation.object_color)
    if annotation.locked:
        properties["isLocked"] = True
    if annotation.metadata:
        properties["metadata"] = dict(annotation.metadata)
    if annotation.class_name:
        color = annotation.color or DEFAULT_CLASSES.get(annotation.class_name, (128, 128, 128))
        properties["classification"] = {"name": annotation.class_name, "color": list(color)}
    if annotation.measurements:
        properties["measurements"] = dict(annotation.measurements)
    feature: dict[str, Any] = {"type": "Feature"}
    if annotation.uid:
        feature["id"] = annotation.uid
    feature["geometry"] = mapping(annotation.geometry)
    feature["properties"] = properties
    return feature


def _write_feature_collection(handle: IO[str], annotations: Iterable[Annotation]) -> None:
    """The FeatureCollection of ``annotations``, one feature at a time (as ``json.dumps`` lays
    out the whole document)."""
    handle.write('{"type": "FeatureCollection", "features": [')
    for index, annotation in enumerate(annotations):
        if index:
            handle.write(", ")
        handle.write(json.dumps(feature_from_annotation(annotation)))
    handle.write("]}")


def write_geojson(path: str | os.PathLike[str], annotations: Iterable[Annotation]) -> None:
    """Write annotations as a QuPath-compatible FeatureCollection, atomically.

    Written one feature at a time into the temporary file of
    :func:`~pathviewer.core.atomic.atomic_write`: a failure part-way removes it and leaves
    ``path`` as it was.
    """
    if Path(path).suffix.lower() == ".gz":  # QuPath reads and writes .geojson.gz
        with (
            atomic_write(path, "wb") as handle,
            # filename="": the header would otherwise name the temporary file.
            gzip.GzipFile(filename="", fileobj=handle, mode="wb") as compressed,
            io.TextIOWrapper(compressed, encoding="utf-8", newline="") as text,
        ):
            _write_feature_collection(text, annotations)
    else:
        with atomic_write(path) as handle:
            _write_feature_collection(handle, annotations)


def union_of_class(
    annotations: Iterable[Annotation], class_name: str | None = None
) -> BaseGeometry:
    """Union of the polygonal annotations (of one class when ``class_name`` is given)."""
    polygons = [
        valid_geometry(a.geometry)
        for a in annotations
        if a.geometry.geom_type in ("Polygon", "MultiPolygon")
        and (class_name is None or a.class_name == class_name)
    ]
    if not polygons:
        return shapely.Polygon()
    return shapely.union_all(polygons)


#: File extensions of the annotation formats, by format name.
GEOJSON_SUFFIXES = (".geojson", ".json")
ASAP_SUFFIXES = (".xml",)  # ASAP XML, and Aperio ImageScope XML (told apart by the root)
NDPA_SUFFIXES = (".ndpa",)


def qupath_offset(properties: Mapping[str, str]) -> tuple[float, float]:
    """Where QuPath's origin lies in OpenSlide's level-0 pixels: ``openslide.bounds-x/y``.

    QuPath opens a slide with bounds (typical of MRXS) cropped to them, so its coordinates are
    OpenSlide's minus this offset; ``(0, 0)`` for a slide without bounds.
    """

    def number(key: str) -> float:
        try:
            value = float(properties.get(key, 0) or 0)
        except ValueError:
            return 0.0
        return value if math.isfinite(value) else 0.0

    return number("openslide.bounds-x"), number("openslide.bounds-y")


def shift_annotations(annotations: Iterable[Annotation], dx: float, dy: float) -> list[Annotation]:
    """The annotations moved by ``(dx, dy)`` level-0 pixels (everything else kept)."""
    if not dx and not dy:
        return list(annotations)
    return [
        dataclasses.replace(a, geometry=affinity.translate(a.geometry, xoff=dx, yoff=dy))
        for a in annotations
    ]


def annotation_format(path: str | os.PathLike[str], writing: bool = False) -> str:
    """``"geojson"``, ``"asap"`` (``.xml``: ASAP, or Aperio ImageScope on reading) or ``"ndpa"``
    from a file's extension.

    Parameters
    ----------
    writing
        The file is to be written: NDPA is refused (it is read only).

    Raises
    ------
    AnnotationError
        Any other extension (or NDPA when ``writing``).
    """
    name = Path(path).name.lower()
    suffix = Path(path).suffix.lower()
    if suffix in GEOJSON_SUFFIXES or name.endswith((".geojson.gz", ".json.gz")):
        return "geojson"
    if suffix in ASAP_SUFFIXES:
        return "asap"
    if suffix in NDPA_SUFFIXES:
        if writing:
            raise AnnotationError(
                f"{path}: NDPA is read only here; write .geojson (QuPath) or .xml (ASAP) instead"
            )
        return "ndpa"
    raise AnnotationError(
        f"{path}: unknown annotation format {suffix or '(no extension)'!r}; use"
        " .geojson/.json/.geojson.gz (QuPath GeoJSON), .xml (ASAP XML; Aperio ImageScope XML"
        " read too) or .ndpa (NDP.view, read only)"
    )


def read_annotations(
    path: str | os.PathLike[str], slide_properties: Mapping[str, str] | None = None
) -> list[Annotation]:
    """Read QuPath GeoJSON (``.geojson``/``.json``), ASAP or Aperio XML (``.xml``, by its root
    element) or NDP.view's NDPA (``.ndpa``), all or nothing.

    Parameters
    ----------
    slide_properties
        OpenSlide properties of the slide the file belongs to: NDPA needs them (its coordinates
        are nanometres from the slide centre); the other formats ignore them.
    """
    fmt = annotation_format(path)
    if fmt == "asap":
        from pathviewer.core.asap import read_xml_annotations  # asap imports this module

        return read_xml_annotations(path)
    if fmt == "ndpa":
        from pathviewer.core.ndpa import read_ndpa

        return read_ndpa(path, slide_properties)
    return read_geojson(path)


def write_annotations(path: str | os.PathLike[str], annotations: Iterable[Annotation]) -> None:
    """Write QuPath GeoJSON or ASAP XML by the extension of ``path``, atomically."""
    if annotation_format(path, writing=True) == "asap":
        from pathviewer.core.asap import write_asap

        write_asap(path, annotations)
    else:
        write_geojson(path, annotations)


def tiles_to_geojson(
    rows: Iterable[Sequence[float]],
    path: str | os.PathLike[str],
    measurement: str = "probability",
    positive_class: str | None = None,
    negative_class: str | None = None,
    threshold: float = 0.5,
) -> int:
    """Export patch predictions as QuPath ``tile`` objects carrying a measurement.

    QuPath colours tiles by a measurement (Measure > Show measurement maps), so a prediction map
    can be inspected next to the annotations.

    Parameters
    ----------
    rows
        ``(x, y, width, height, prob)`` per patch, level-0 px.
    path
        Output ``.geojson`` (written atomically).
    measurement
        Name of the measurement holding ``prob``.
    positive_class, negative_class
        When given, tiles with ``prob >= threshold`` (resp. below) get that classification.
    threshold
        Decision threshold for the classes.

    Returns
    -------
    int
        Number of tiles written.
    """
    annotations = []
    for i, row in enumerate(rows):
        if len(row) != 5:
            raise AnnotationError(f"tile row {i}: expected (x, y, width, height, prob)")
        x, y, w, h, prob = (float(v) for v in row)
        if not all(math.isfinite(v) for v in (x, y, w, h, prob)) or w <= 0 or h <= 0:
            raise AnnotationError(f"tile row {i}: invalid box or probability {tuple(row)!r}")
        class_name = positive_class if prob >= threshold else negative_class
        annotations.append(
            Annotation(
                geometry=shapely.box(x, y, x + w, y + h),
                class_name=class_name,
                object_type="tile",
                measurements={measurement: prob},
            )
        )
    write_geojson(path, annotations)
    return len(annotations)


#: Colours given to classes that arrive without one (well apart from each other and from the
#: default palette's red, green and blue).
DISTINCT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 127, 14),
    (148, 103, 189),
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (140, 86, 75),
    (255, 215, 0),
    (0, 128, 128),
)


def new_class_colors(
    annotations: Iterable[Annotation], palette: Mapping[str, tuple[int, int, int]]
) -> dict[str, tuple[int, int, int]]:
    """Colours for the classes of ``annotations`` that ``palette`` lacks.

    An annotation's own colour is kept (QuPath and ASAP write one); otherwise the first
    :data:`DISTINCT_COLORS` entry the palette does not use yet.
    """
    used = set(palette.values())
    added: dict[str, tuple[int, int, int]] = {}
    for annotation in annotations:
        name = annotation.class_name
        if not name or name in palette or name in added:
            continue
        color = annotation.color
        if color is None or color in used:
            color = next((c for c in DISTINCT_COLORS if c not in used), DISTINCT_COLORS[0])
        added[name] = color
        used.add(color)
    return added


def outside_slide(annotations: Sequence[Annotation], dimensions: tuple[int, int]) -> int:
    """How many of ``annotations`` lie wholly outside a slide of ``dimensions`` (level-0 px)."""
    width, height = dimensions
    count = 0
    for annotation in annotations:
        x0, y0, x1, y1 = annotation.geometry.bounds
        if x1 < 0 or y1 < 0 or x0 > width or y0 > height:
            count += 1
    return count
