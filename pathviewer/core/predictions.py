"""The predictions folder of ``pathviewer infer``: its file names, one writer and one reader.

Layout::

    PRED_DIR/
        patches.csv      slide,x,y,width,height,prob  (level-0 px; one row per scored patch)
        slides.csv       slide,score,pred             (pred = score >= 0.5)
        heatmaps/NAME    one Heatmap .npz per slide, NAME from :func:`heatmap_names`
        prediction.json  method, model, model_info, pooling, warnings, counts
        shard.json       added by ``infer --shard``; evaluation.json added by ``evaluate``

``slide`` is the slide as the cohort CSV names it.  Whoever writes, reads or looks up a file of
the folder does it here: ``infer`` and "Analyse this slide" (through
:func:`pathviewer.ml.inference.write_predictions`), ``infer merge``, ``evaluate`` and the
heatmap viewer.

Writing (:func:`write_predictions`) builds the whole folder in a hidden sibling
(``.NAME.new-XXXXXXXX``), fsyncs every file, then swaps it in: one ``renameat2(RENAME_EXCHANGE)``
where the system has it (Linux), two renames elsewhere.  A kill at any moment leaves the complete
old folder or the complete new one under ``PRED_DIR``, never new heatmaps beside old tables;
with two renames, a kill between them leaves ``PRED_DIR`` missing and the old folder complete in
``.NAME.old-XXXXXXXX`` (and the reader says so).  The next write removes the hidden siblings a
killed writer left: old folders at once, unfinished new ones once they are an hour old.  Since
the folder is replaced whole, a target holding anything else (a run folder, a home folder) is
refused before anything is written.

Reading (:func:`read_predictions`) validates every cell and raises :class:`PredictionsError`
with one line naming the file and the row: a non-number score, a short row, bad JSON, a byte
that is not UTF-8, a fractional or infinite pixel position, a missing column.  A UTF-8 byte-order
mark is accepted.
"""

from __future__ import annotations

import array
import contextlib
import csv
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from pathviewer.core.atomic import ORPHAN_AGE_S, fsync_directory, is_temp_name
from pathviewer.core.errors import PredictionsError
from pathviewer.core.heatmap import Heatmap, save_heatmap
from pathviewer.core.operating_point import OperatingPoint, OperatingPointError

PATCHES_CSV = "patches.csv"
SLIDES_CSV = "slides.csv"
HEATMAPS = "heatmaps"
INFO_JSON = "prediction.json"
#: Added to a written folder by ``infer --shard`` (:mod:`pathviewer.ml.distributed`).
SHARD_JSON = "shard.json"
#: Added by ``evaluate`` (its default ``--json``).
EVALUATION_JSON = "evaluation.json"
#: The patch-index cache of :func:`pathviewer.ml.data.cache_dir_for` when the user data folder
#: is not writable: kept (moved into the new folder) when the folder is replaced.
TILE_CACHE = "tile-cache"

PATCH_COLUMNS = ("slide", "x", "y", "width", "height", "prob")
SLIDE_COLUMNS = ("slide", "score", "pred")
#: A slide is predicted positive when its score is at least this.
PRED_THRESHOLD = 0.5

#: Every name a predictions folder may hold (besides atomic-write temporaries); file browsers
#: add the last three.  Anything else makes the folder not one to replace.
_OWN_NAMES = frozenset(
    {PATCHES_CSV, SLIDES_CSV, HEATMAPS, INFO_JSON, SHARD_JSON, EVALUATION_JSON, TILE_CACHE}
    | {".DS_Store", "Thumbs.db", "desktop.ini"}
)
#: Pixel positions and sizes above this are not from a slide (and would overflow int32 users).
_MAX_PIXEL = 2**31 - 1
_INFO_TEXT_KEYS = ("method", "model", "model_info", "pooling")


# --- Names ------------------------------------------------------------------------------------


def _flat_name(slide: str) -> str:
    return slide.replace("/", "__").replace("\\", "__")


def heatmap_names(slides: Sequence[str]) -> list[str]:
    """The file names under ``heatmaps/`` of slides listed in this order (as in slides.csv).

    A slide's heatmap is named after the stem of the slide as the cohort names it
    (``a/slide_01.tif`` -> ``slide_01.npz``); a later slide whose stem is taken (same file name
    in another folder) gets its whole name with ``/`` as ``__`` (``b__slide_01.tif.npz``), and a
    number if even that is taken.
    """
    names: list[str] = []
    used: set[str] = set()
    for slide in slides:
        stem = PurePath(slide).stem
        if not stem or stem in used:
            stem = _flat_name(slide) or "slide"
        base, number = stem, 2
        while stem in used:
            stem, number = f"{base}-{number}", number + 1
        used.add(stem)
        names.append(f"{stem}.npz")
    return names


def find_heatmap(
    folder: str | os.PathLike[str],
    slide: str | None,
    slide_path: str | os.PathLike[str] | None = None,
    listed: Sequence[str] = (),
) -> Path | None:
    """The heatmap file of a slide in a predictions folder, or None when there is none.

    Parameters
    ----------
    folder
        The predictions folder.
    slide
        The slide as the cohort names it (None without a cohort).
    slide_path
        The slide file: its stem is tried last (a slide opened without a cohort).
    listed
        The slides of ``slides.csv`` in order: a listed slide's file is the one
        :func:`heatmap_names` gave it, so two slides with one stem never swap heatmaps.
    """
    heatmaps = Path(folder) / HEATMAPS
    if slide is not None and slide in listed:
        path = heatmaps / heatmap_names(listed)[list(listed).index(slide)]
        return path if _is_file(path) else None
    candidates = []
    if slide:
        candidates += [f"{PurePath(slide).stem}.npz", f"{_flat_name(slide)}.npz"]
    if slide_path is not None:
        candidates.append(f"{PurePath(slide_path).stem}.npz")
    for name in candidates:
        if _is_file(heatmaps / name):
            return heatmaps / name
    return None


def _is_file(path: Path) -> bool:
    # A name the file system cannot hold (too long) is no file; Path.is_file raises for it.
    try:
        return path.is_file()
    except OSError:
        return False


def pred_of(score: float) -> int:
    """The 0/1 prediction of a slide score (``pred`` of slides.csv)."""
    return int(score >= PRED_THRESHOLD)


# --- Typed contents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlideRow:
    """One row of slides.csv.

    Attributes
    ----------
    slide
        The slide as the cohort names it.
    score
        Slide score in [0, 1].
    pred
        0 or 1 (from the score by :func:`pred_of` when the file has no ``pred``).
    line
        Its line in slides.csv (header = 1), for messages; 0 when not read from a file.
    """

    slide: str
    score: float
    pred: int
    line: int = 0


@dataclass(frozen=True)
class PatchRows:
    """The patches.csv rows of one slide, as arrays.

    Attributes
    ----------
    boxes
        ``(n, 4)`` int64 level-0 ``x, y, width, height``.
    probs
        ``(n,)`` float64 probabilities in [0, 1].
    """

    boxes: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True)
class PredictionInfo:
    """prediction.json.

    Attributes
    ----------
    method, model, model_info, pooling
        The method, the model file, its one-line description, the slide pooling ("" if absent).
    warnings
        Per slide, the reasons to distrust the model on it.
    counts
        ``(slides, patches)`` rows the writer wrote (None in folders from before it recorded them).
    operating_point
        The threshold ``pred`` was called at, when the run had one (else 0.5).
    record
        The whole JSON object (keys this module does not know, e.g. ``merged_from``).
    """

    method: str = ""
    model: str = ""
    model_info: str = ""
    pooling: str = ""
    warnings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    counts: tuple[int, int] | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    operating_point: OperatingPoint | None = None


@dataclass(frozen=True)
class Predictions:
    """A predictions folder as :func:`read_predictions` found it.

    Attributes
    ----------
    folder
        The folder.
    slides
        slides.csv, in its order.
    patches
        Slide -> its patches.csv rows; every listed slide has an entry (empty when it has no
        patch); empty when patches.csv was not read.
    info
        prediction.json (None when absent and not required).
    heatmaps
        Slide -> its heatmap file, for the slides whose file exists.
    """

    folder: Path
    slides: tuple[SlideRow, ...]
    patches: Mapping[str, PatchRows]
    info: PredictionInfo | None
    heatmaps: Mapping[str, Path]


@dataclass(frozen=True)
class SlideOutput:
    """What :func:`write_predictions` writes for one slide.

    Attributes
    ----------
    slide
        The slide as the cohort names it.
    score
        Slide score in [0, 1].
    boxes
        ``(n, 4)`` level-0 ``x, y, width, height`` of its scored patches.
    probs
        ``(n,)`` their probabilities in [0, 1].
    heatmap
        Its heatmap, an existing heatmap file to copy, or a function that builds the heatmap
        (called when it is written, so a cohort's heatmaps are never all in memory at once).
    pred
        0 or 1; None for :func:`pred_of` of the (unrounded) score.
    """

    slide: str
    score: float
    boxes: np.ndarray
    probs: np.ndarray
    heatmap: Heatmap | Path | Callable[[], Heatmap]
    pred: int | None = None


# --- Reading ----------------------------------------------------------------------------------


def read_predictions(
    folder: str | os.PathLike[str], *, patches: bool = True, complete: bool = False
) -> Predictions:
    """Read and validate a predictions folder.

    Parameters
    ----------
    folder
        The folder ``pathviewer infer`` (or ``infer merge``) wrote.
    patches
        Read patches.csv (False: only the slide scores, e.g. for the viewer's cohort table).
    complete
        Require everything ``infer`` writes: prediction.json and one heatmap per slide (False:
        prediction.json is read when present, heatmaps are only looked up).

    Returns
    -------
    Predictions
        Typed rows of slides.csv and patches.csv, prediction.json, and the heatmap files.

    Raises
    ------
    PredictionsError
        One line naming the file and the row: missing folder, file or columns; a cell that is
        not what it should be (a score that is not a probability, a fractional or infinite pixel
        position, an empty slide); a row shorter or longer than the header; a byte that is not
        UTF-8; bad JSON; a slide listed twice, or a patch of a slide not in slides.csv; row
        counts unlike those prediction.json records.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is not a folder" if os.path.lexists(root) else "predictions folder not found"
        left = _siblings(root, "old")
        if left and not os.path.lexists(root):
            what += f" (an interrupted write left the previous one in {left[0].name})"
        raise PredictionsError(f"{root}: {what}")
    info_path = root / INFO_JSON
    info = _read_info(info_path) if complete or info_path.is_file() else None
    slides = _read_slides(root / SLIDES_CSV)
    found = {row.slide: _Patches() for row in slides}
    if patches:
        _read_patches(root / PATCHES_CSV, found)
    if info is not None and info.counts is not None:
        wrote_slides, wrote_patches = info.counts
        if len(slides) != wrote_slides:
            raise PredictionsError(
                f"{root / SLIDES_CSV}: {len(slides)} slide rows, but {INFO_JSON} records "
                f"{wrote_slides} (truncated or mixed folder)"
            )
        n_patches = sum(len(rows.probs) for rows in found.values())
        if patches and n_patches != wrote_patches:
            raise PredictionsError(
                f"{root / PATCHES_CSV}: {n_patches} patch rows, but {INFO_JSON} records "
                f"{wrote_patches} (truncated or mixed folder)"
            )
    names = [row.slide for row in slides]
    heatmaps: dict[str, Path] = {}
    for slide, name in zip(names, heatmap_names(names), strict=True):
        path = root / HEATMAPS / name
        try:
            present = path.is_file()
        except OSError as error:  # e.g. a slide name too long for the file system
            raise PredictionsError(
                f"{root / HEATMAPS}: heatmap of slide {_shown(slide, 80)}: {error.strerror}"
            ) from None
        if present:
            heatmaps[slide] = path
        elif complete:
            raise PredictionsError(f"{path}: heatmap of slide {_shown(slide, 80)} not found")
    return Predictions(
        root,
        tuple(slides),
        {name: rows.typed() for name, rows in found.items()} if patches else {},
        info,
        heatmaps,
    )


class _Patches:
    """One slide's patch rows while they are read: flat C arrays (a cohort has millions)."""

    def __init__(self) -> None:
        self.boxes = array.array("q")
        self.probs = array.array("d")

    def typed(self) -> PatchRows:
        return PatchRows(
            np.array(self.boxes, np.int64).reshape(-1, 4), np.array(self.probs, np.float64)
        )


@contextlib.contextmanager
def _csv_rows(path: Path, columns: Sequence[str], required: Sequence[str]) -> Iterator[Any]:
    """``({column: index}, rows)`` of a CSV file; rows are ``(line, cells)``, of the header's length.

    Every failure of the file itself (missing, unreadable, not UTF-8, not CSV, a row shorter or
    longer than the header) becomes one :class:`PredictionsError` line.
    """
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions file not found")
    try:
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = [name.strip() for name in next(reader)]
            except StopIteration:
                raise PredictionsError(f"{path}: empty file (no header row)") from None
            if not all(name in header for name in required):
                # Every absent column is named, optional ones too: one fix for the whole header.
                missing = [name for name in columns if name not in header]
                raise PredictionsError(f"{path}: missing column(s) {', '.join(missing)}")
            for name in columns:
                if header.count(name) > 1:
                    raise PredictionsError(f"{path}: column {name} given twice")
            index = {name: header.index(name) for name in columns if name in header}

            def rows() -> Iterator[tuple[int, list[str]]]:
                for cells in reader:
                    if not cells:  # a blank line
                        continue
                    if len(cells) != len(header):
                        raise PredictionsError(
                            f"{path} row {reader.line_num}: {len(cells)} fields, the header has "
                            f"{len(header)}"
                            + (" (truncated or damaged file)" if len(cells) < len(header) else "")
                        )
                    yield reader.line_num, cells

            try:
                yield index, rows()
            except csv.Error as error:
                raise PredictionsError(
                    f"{path} row {reader.line_num}: not a CSV row ({error})"
                ) from None
    except UnicodeDecodeError:
        raise PredictionsError(_not_utf8(path)) from None
    except csv.Error as error:  # in the header
        raise PredictionsError(f"{path} row 1: not a CSV row ({error})") from None
    except OSError as error:
        raise PredictionsError(f"{path}: cannot read ({error.strerror or error})") from None


def _not_utf8(path: Path) -> str:
    """The message for a file that is not UTF-8, naming the row of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        row = data.count(b"\n", 0, error.start) + 1
        return f"{path} row {row}: not UTF-8 text (byte 0x{data[error.start]:02x})"
    return f"{path}: not UTF-8 text"  # pragma: no cover - the file changed under us


def _shown(text: str, limit: int = 24) -> str:
    """A cell as a message shows it: quoted, and cut (a damaged cell can be megabytes long)."""
    return repr(text) if len(text) <= limit else f"{text[: limit - 4]!r}..."


def _probability(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PredictionsError(f"{where}: {what} {_shown(text)} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN and infinities
        raise PredictionsError(f"{where}: {what} {_shown(text)} is not a probability in [0, 1]")
    return value


def _pixels(text: str, what: str, where: str, least: int) -> int:
    # Only plain digits: int() would take "1_000" and digits of other scripts, and its
    # 4,300-digit limit; a position is never fractional or infinite.
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not (
        least <= int(text) <= _MAX_PIXEL
    ):
        kind = "pixel position" if least == 0 else "patch size"
        raise PredictionsError(
            f"{where}: {what} {_shown(text)} is not a {kind} (a whole number from {least})"
        )
    return int(text)


def _slide_name(text: str, where: str) -> str:
    if not text:
        raise PredictionsError(f"{where}: empty slide")
    return text


def _read_slides(path: Path) -> list[SlideRow]:
    out: list[SlideRow] = []
    seen: dict[str, int] = {}
    with _csv_rows(path, SLIDE_COLUMNS, ("slide", "score")) as (index, rows):
        i_slide, i_score, i_pred = index["slide"], index["score"], index.get("pred")
        for line, cells in rows:
            where = f"{path} row {line}"
            slide = _slide_name(cells[i_slide].strip(), where)
            if slide in seen:
                raise PredictionsError(
                    f"{where}: slide {_shown(slide, 80)} listed twice (also row {seen[slide]})"
                )
            seen[slide] = line
            score = _probability(cells[i_score].strip(), "score", where)
            pred_text = cells[i_pred].strip() if i_pred is not None else ""
            if pred_text in ("0", "1", "0.0", "1.0"):
                pred = int(float(pred_text))
            elif pred_text == "":
                pred = pred_of(score)
            else:
                raise PredictionsError(f"{where}: pred {_shown(pred_text)} is not 0 or 1")
            out.append(SlideRow(slide, score, pred, line))
    return out


def _read_patches(path: Path, found: dict[str, _Patches]) -> None:
    with _csv_rows(path, PATCH_COLUMNS, PATCH_COLUMNS) as (index, rows):
        i_slide, i_x, i_y, i_w, i_h, i_p = (index[name] for name in PATCH_COLUMNS)
        for line, cells in rows:
            where = f"{path} row {line}"
            slide = _slide_name(cells[i_slide].strip(), where)
            of_slide = found.get(slide)
            if of_slide is None:
                raise PredictionsError(f"{where}: slide {_shown(slide, 80)} is not in {SLIDES_CSV}")
            box = (
                _pixels(cells[i_x].strip(), "x", where, 0),
                _pixels(cells[i_y].strip(), "y", where, 0),
                _pixels(cells[i_w].strip(), "width", where, 1),
                _pixels(cells[i_h].strip(), "height", where, 1),
            )
            prob = _probability(cells[i_p].strip(), "prob", where)
            of_slide.boxes.extend(box)
            of_slide.probs.append(prob)


def _read_info(path: Path) -> PredictionInfo:
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PredictionsError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        row = data.count(b"\n", 0, error.start) + 1
        raise PredictionsError(
            f"{path} line {row}: not UTF-8 text (byte 0x{data[error.start]:02x})"
        ) from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise PredictionsError(
            f"{path} line {error.lineno}: not valid JSON ({error.msg})"
        ) from None
    except RecursionError:
        raise PredictionsError(f"{path}: JSON nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise PredictionsError(f"{path}: not valid JSON ({error})") from None
    return parse_info(record, str(path))


def parse_info(record: object, where: str = INFO_JSON) -> PredictionInfo:
    """Check a prediction.json object (read, or about to be written) and type it.

    Raises
    ------
    PredictionsError
        Not an object, or a known key of the wrong type (named).
    """
    if not isinstance(record, dict):
        raise PredictionsError(f"{where}: not a JSON object")
    texts = {}
    for key in _INFO_TEXT_KEYS:
        value = record.get(key, "")
        if not isinstance(value, str):
            raise PredictionsError(f"{where}: {key!r} must be text, not {type(value).__name__}")
        texts[key] = value
    warnings = record.get("warnings", {})
    if not isinstance(warnings, dict) or not all(
        isinstance(v, list) and all(isinstance(w, str) for w in v) for v in warnings.values()
    ):
        raise PredictionsError(f"{where}: 'warnings' must map slides to lists of text")
    counts = record.get("counts")
    if counts is not None:
        if not isinstance(counts, dict) or not all(
            type(counts.get(k)) is int and counts[k] >= 0 for k in ("slides", "patches")
        ):
            raise PredictionsError(f"{where}: 'counts' must hold whole numbers slides, patches")
        counts = (counts["slides"], counts["patches"])
    point = None
    if record.get("operating_point") is not None:
        try:
            point = OperatingPoint.from_dict(record["operating_point"], f"{where}: operating_point")
        except OperatingPointError as error:
            raise PredictionsError(str(error)) from None
    return PredictionInfo(
        texts["method"],
        texts["model"],
        texts["model_info"],
        texts["pooling"],
        {slide: tuple(v) for slide, v in warnings.items()},
        counts,
        dict(record),
        point,
    )


# --- Writing ----------------------------------------------------------------------------------


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """The folder :func:`write_predictions` would replace as a whole, refused early when it must not.

    Call it before a long job, so the refusal comes before the work.

    Returns
    -------
    Path
        The absolute folder (the target of a symbolic link: the link is kept).

    Raises
    ------
    PredictionsError
        ``out`` is a file, holds anything a predictions folder does not (a run folder, a home
        folder: replacing it would lose those), or holds the current folder.
    """
    path = Path(os.path.abspath(out))
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise PredictionsError(
            f"{out}: is a file, not a folder (give a folder for the predictions)"
        )
    if path.is_dir():
        try:
            foreign = sorted(
                e.name
                for e in os.scandir(path)
                if e.name not in _OWN_NAMES and not is_temp_name(e.name)
            )
        except OSError as error:
            raise PredictionsError(f"{out}: cannot list ({error.strerror or error})") from None
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise PredictionsError(
                f"{out}: not a predictions folder (it holds {shown}); the predictions replace the "
                "folder as a whole, so give a new or empty folder"
            )
        cwd, real = Path(os.path.realpath(Path.cwd())), Path(os.path.realpath(path))
        if cwd == real or real in cwd.parents:
            raise PredictionsError(
                f"{out}: is the current folder; the predictions replace the folder as a whole, "
                "so run from outside it"
            )
    if path.parent == path:
        raise PredictionsError(f"{out}: cannot replace a file system root")
    return path


def _check_outputs(slides: Sequence[SlideOutput], target: Path) -> None:
    seen: set[str] = set()
    for s in slides:
        if not isinstance(s.slide, str) or not s.slide or s.slide != s.slide.strip():
            raise PredictionsError(
                f"{target}: slide {s.slide!r}: not a slide name (empty or spaced)"
            )
        if s.slide in seen:
            raise PredictionsError(f"{target}: slide {s.slide!r}: given twice")
        seen.add(s.slide)
        if not 0.0 <= float(s.score) <= 1.0:  # NaN fails too
            raise PredictionsError(
                f"{target}: slide {s.slide!r}: score {s.score!r} is not in [0, 1]"
            )
        if s.pred not in (None, 0, 1):
            raise PredictionsError(f"{target}: slide {s.slide!r}: pred {s.pred!r} is not 0 or 1")
        boxes, probs = np.asarray(s.boxes), np.asarray(s.probs, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or probs.shape != (len(boxes),):
            raise PredictionsError(f"{target}: slide {s.slide!r}: boxes must be (n, 4), probs (n,)")
        if len(boxes) and not (
            np.issubdtype(boxes.dtype, np.integer)
            and boxes.min() >= 0
            and boxes[:, 2:].min() >= 1
            and boxes.max() <= _MAX_PIXEL
        ):
            raise PredictionsError(
                f"{target}: slide {s.slide!r}: patch boxes are not whole pixels >= 0"
            )
        if not np.all((probs >= 0.0) & (probs <= 1.0)):  # NaN fails too
            raise PredictionsError(
                f"{target}: slide {s.slide!r}: patch probabilities are not all in [0, 1] (NaN from the model?)"
            )


def write_predictions(
    out: str | os.PathLike[str], slides: Sequence[SlideOutput], info: Mapping[str, Any]
) -> Path:
    """Write a predictions folder, replacing any folder at ``out`` as a whole.

    Parameters
    ----------
    out
        The folder (created, or replaced; see :func:`check_output_folder`).
    slides
        Its slides, in the order of the tables.
    info
        prediction.json (``method``, ``model``, ``model_info``, ``pooling``, ``warnings``, and
        any other key); ``counts`` is set here.

    Returns
    -------
    Path
        The folder written.

    Raises
    ------
    PredictionsError
        ``out`` cannot be replaced (a file, a folder with other files), or the contents would
        not read back (a probability outside [0, 1], a slide given twice, ...).
    OSError
        Writing failed (full disk, no permission): ``out`` is then as it was.
    """
    target = check_output_folder(out)
    _check_outputs(slides, target)
    record = {
        **info,
        "counts": {"slides": len(slides), "patches": sum(len(s.probs) for s in slides)},
    }
    parse_info(record, f"{target / INFO_JSON} (to write)")
    names = heatmap_names([s.slide for s in slides])
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_siblings(target)
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(new, 0o777 & ~umask)  # mkdtemp makes it private; the folder is not
        heatmaps = new / HEATMAPS
        heatmaps.mkdir()
        for s, name in zip(slides, names, strict=True):
            _write_heatmap(s.heatmap, heatmaps / name)
        with _durable(new / PATCHES_CSV) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(PATCH_COLUMNS)
            for s in slides:
                probs = np.asarray(s.probs, np.float64).tolist()
                for (x, y, w, h), p in zip(np.asarray(s.boxes).tolist(), probs, strict=True):
                    writer.writerow([s.slide, x, y, w, h, f"{p:.6f}"])
        with _durable(new / SLIDES_CSV) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(SLIDE_COLUMNS)
            for s in slides:
                pred = pred_of(s.score) if s.pred is None else s.pred
                writer.writerow([s.slide, f"{s.score:.6f}", pred])
        with _durable(new / INFO_JSON) as handle:
            json.dump(record, handle, indent=2)
        fsync_directory(heatmaps)
        fsync_directory(new)
        _carry_cache(target, new)
        old = _swap_in(new, target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _sweep_siblings(target)  # an old folder a kill between two renames left, now stale
    return target


@contextlib.contextmanager
def _durable(path: Path) -> Iterator[IO[str]]:
    """A new text file, flushed and fsynced on close (the folder is renamed, not the file)."""
    with open(path, "x", newline="", encoding="utf-8") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _write_heatmap(source: Heatmap | Path | Callable[[], Heatmap], path: Path) -> None:
    if isinstance(source, Heatmap):
        save_heatmap(source, path)  # fsynced by atomic_write
    elif isinstance(source, Path):
        with open(source, "rb") as reader, open(path, "xb") as writer:
            shutil.copyfileobj(reader, writer)
            writer.flush()
            os.fsync(writer.fileno())
    else:
        save_heatmap(source(), path)


def _carry_cache(target: Path, new: Path) -> None:
    """Move the old folder's tile cache into the new one (a cache: lost on a kill, no harm)."""
    cache = target / TILE_CACHE
    if cache.is_dir() and not cache.is_symlink():
        with contextlib.suppress(OSError):
            os.rename(cache, new / TILE_CACHE)


def _swap_in(new: Path, target: Path) -> Path | None:
    """Put ``new`` at ``target``; return the folder now holding the old contents (to delete)."""
    if not os.path.lexists(target):
        os.rename(new, target)
        fsync_directory(target.parent)
        return None
    old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
    if _exchange(new, target):  # one atomic step: no moment without a complete folder
        fsync_directory(target.parent)
        # Named as an old folder at once, so a kill before it is deleted leaves it to the next
        # write's sweep, not to the hour-long wait of a folder being built.
        os.rename(new, old)
        return old
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)  # put the old folder back (a kill here leaves it in ``old``)
        raise
    fsync_directory(target.parent)
    return old


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a kernel or file system without it
    raise OSError(code, os.strerror(code), str(b))


def _siblings(target: Path, kind: str) -> list[Path]:
    """Hidden folders ``.NAME.new-*`` or ``.NAME.old-*`` beside ``target`` (see the module notes)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{kind}-[a-z0-9_]{{8}}")
    try:
        with os.scandir(target.parent) as entries:
            return sorted(
                Path(entry.path)
                for entry in entries
                if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def _sweep_siblings(target: Path) -> None:
    """Remove hidden siblings of ``target`` that killed writers left.

    ``.NAME.new-*`` (a folder being built) once an hour old, so a write in progress in another
    process is left alone; ``.NAME.old-*`` (the previous folder, between two renames) only while
    ``target`` exists, since otherwise it is the only complete copy.
    """
    cutoff = time.time() - ORPHAN_AGE_S
    for path in _siblings(target, "new"):
        with contextlib.suppress(OSError):
            if path.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
    if target.is_dir():
        for path in _siblings(target, "old"):
            shutil.rmtree(path, ignore_errors=True)


def load_slide_heatmap(
    source: str | os.PathLike[str], slide_path: str | os.PathLike[str], slide: str | None = None
) -> Heatmap:
    """The heatmap of one slide from a heatmap ``.npz`` or a predictions folder.

    Parameters
    ----------
    source
        A ``.npz`` heatmap, or the folder ``pathviewer infer`` wrote.
    slide_path
        The slide file (its stem finds the heatmap without a cohort name).
    slide
        The slide as the cohort names it, when known.

    Raises
    ------
    HeatmapError
        No such file or folder, a malformed folder, or no heatmap of this slide in it.
    """
    from pathviewer.core.heatmap import HeatmapError, load_heatmap

    path = Path(source)
    if path.is_file():
        return load_heatmap(path)
    if not path.is_dir():
        raise HeatmapError(f"{path}: no such heatmap file or predictions folder")
    listed: list[str] = []
    if (path / SLIDES_CSV).is_file():
        try:
            listed = [row.slide for row in read_predictions(path, patches=False).slides]
        except PredictionsError as error:
            raise HeatmapError(str(error)) from None
    found = find_heatmap(path, slide, slide_path, listed)
    if found is None:
        raise HeatmapError(f"{path}: no heatmap of {PurePath(slide_path).name} in this folder")
    return load_heatmap(found)
