"""Property-based fuzzing of every reader of user files.

The property, for GeoJSON, ASAP XML, cohorts, labels and flags tables (the predictions folder
has its own in ``test_predictions.py``): a mutated valid file gives either a valid result, or
the project's error with one line that names the file; never another exception; and the
project store is left as it was when an import fails.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathviewer.core.annotations import Annotation, read_annotations, write_annotations
from pathviewer.core.cohort import read_cohort
from pathviewer.core.errors import PathViewerError
from pathviewer.core.patch_tables import read_flags, read_labels
from pathviewer.core.store import Project

TRICKY = ["", "high", "512.5", "inf", "-inf", "1e400", "nan", "-1", "\u0663", "0x10", "9" * 5000,
          '"', "\x00", "\ufeff", "é", "1.5", "0", "1", "2147483648", "  7 ", "[", "{", "<", "&"]  # fmt: skip

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _annotations() -> list[Annotation]:
    return [
        Annotation(shapely.box(10, 10, 200, 120), "Tumor", (200, 0, 0)),
        Annotation(shapely.Polygon([(0, 0), (50, 5), (20, 40)]), "Normal", None),
        Annotation(shapely.LineString([(1, 1), (30, 2)]), "Stroma", (0, 128, 0)),
        Annotation(shapely.Point(5, 6), "Other", None),
    ]


def _valid(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"a{suffix}"
        write_annotations(path, _annotations())
        return path.read_bytes()


VALID = {
    ".geojson": _valid(".geojson"),
    ".xml": _valid(".xml"),
    "cohort.csv": b"slide,label,split,annotations\na.png,1,train,a.geojson\nb.png,0,test,\n",
    "labels.csv": b"slide,x,y,width,height,label,trusted\na.svs,0,0,256,256,Tumor,1\n"
    b"a.svs,256,0,256,256,Normal,0\nb.svs,512,512,256,256,Tumor,\n",
    "flags.csv": b"slide,x,y,width,height,given,suggested,confidence,g\n"
    b"a.svs,0,0,256,256,Normal,Tumor,0.91,0.88\nb.svs,256,0,256,256,Tumor,Normal,0.7,0.6\n",
}


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A valid file with one edit: a replaced token, inserted bytes, a cut, or a swap."""
    data = VALID[name]
    kind = draw(st.sampled_from(["token", "bytes", "truncate", "delete", "swap-lines"]))
    if kind == "token":
        text = data.decode()
        separators = [i for i, c in enumerate(text) if c in ',:"<> \n=']
        start = draw(st.sampled_from(separators))
        end = next((i for i in separators if i > start), len(text))
        value = draw(st.sampled_from(TRICKY) | st.text(max_size=8))
        return (text[: start + 1] + value + text[end:]).encode("utf-8", "surrogatepass")
    position = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return data[:position]
    if kind == "delete":
        return data[:position] + data[position + draw(st.integers(1, 30)) :]
    if kind == "swap-lines":
        lines = data.split(b"\n")
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    return data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]


def _one_line_naming(error: PathViewerError, path: Path) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message or path.name in message, message
    assert len(message) < 2000, message[:200]


def _check_annotations(found: list[Annotation]) -> None:
    for annotation in found:
        geometry = annotation.geometry
        assert not geometry.is_empty
        assert all(math.isfinite(v) for v in geometry.bounds)
        if annotation.color is not None:
            assert all(isinstance(c, int) and 0 <= c <= 255 for c in annotation.color)


@FUZZ
@given(st.sampled_from([".geojson", ".xml"]).flatmap(lambda s: st.tuples(st.just(s), mutated(s))))
def test_annotation_files_read_or_fail_in_one_line(case: tuple[str, bytes]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"shapes{suffix}"
        path.write_bytes(data)
        try:
            found = read_annotations(path)
        except PathViewerError as error:
            _one_line_naming(error, path)
            return
        _check_annotations(found)


@FUZZ
@given(mutated("cohort.csv"))
def test_cohorts_read_or_fail_in_one_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cohort.csv"
        path.write_bytes(data)
        try:
            entries = read_cohort(path, check_files=False)
        except PathViewerError as error:
            _one_line_naming(error, path)
            return
        for entry in entries:
            assert entry.slide and entry.label in (0, 1, None)


@FUZZ
@given(mutated("labels.csv"))
def test_labels_tables_read_or_fail_in_one_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes(data)
        try:
            rows = read_labels(path)
        except PathViewerError as error:
            _one_line_naming(error, path)
            return
        for row in rows:
            assert row.slide and row.label and row.width > 0 and row.height > 0


@FUZZ
@given(mutated("flags.csv"))
def test_flags_import_completely_or_not_at_all(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flags.csv"
        path.write_bytes(data)
        with Project.create(Path(folder) / "project") as project:
            project.add_slide("/kept/slide.svs")
            try:
                rows = read_flags(path)
            except PathViewerError as error:
                _one_line_naming(error, path)
                rows = None
            try:
                count = project.import_flags(path)
            except PathViewerError as error:
                assert rows is None  # the store refuses exactly what the reader refuses
                _one_line_naming(error, path)
                assert [s.path for s in project.slides()] == ["/kept/slide.svs"]
                assert project.review_queue() == [] and project.patch_labels() == []
                return
            assert rows is not None and count == len(rows) == len(project.review_queue())
