"""Patch label tables (``labels.csv``) and patch datasets for the label-refinement engine.

``labels.csv`` has the columns ``slide,x,y,width,height,label[,trusted]``: the slide file (relative
to the CSV, or absolute), the patch box in level-0 pixels, the class name, and optionally whether
a reviewer confirmed the label (``1``/``0``, ``true``/``false``, ``yes``/``no``).

:class:`PatchDataset` reads the patches through :func:`pathviewer.core.slide.open_slide` (at the
pyramid level nearest to the input size, then resized); :class:`ArrayDataset` holds images in
memory for tests and benchmarks.  Both return float ``(C, H, W)`` tensors in [0, 1].
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import CohortError
from pathviewer.core.patch_tables import (
    FLAG_COLUMNS,
    FLAGS_CSV,
    LABEL_COLUMNS,
    REFINED_LABELS_CSV,
    read_labels,
)
from pathviewer.core.slide import SlideSource, open_slide, read_box
from pathviewer.core.slide_pool import SlidePool


@dataclass(frozen=True)
class PatchLabel:
    """One row of ``labels.csv``.

    Attributes
    ----------
    slide
        The slide as written in the CSV.
    path
        Absolute path of the slide file.
    x, y, width, height
        Patch box in level-0 pixels.
    label
        Class name.
    trusted
        Confirmed by a reviewer (never refined).
    row
        1-based line number in the CSV (header = 1), for messages.
    """

    slide: str
    path: Path
    x: int
    y: int
    width: int
    height: int
    label: str
    trusted: bool
    row: int


def read_labels_csv(
    csv_path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    check_slides: bool = True,
    min_classes: int = 2,
    search_dirs: Sequence[str | os.PathLike[str]] = (),
) -> tuple[list[PatchLabel], list[str]]:
    """Read and validate a patch label table.

    Parameters
    ----------
    csv_path
        The ``labels.csv`` file.
    classes
        Allowed class names in output order; None: the sorted names found in the file.
    check_slides
        Open every slide once: fail for a missing or unreadable file, or a box outside it.
    min_classes
        Fail when fewer distinct labels occur (training needs two).
    search_dirs
        Further folders in which relative slide paths are looked up when they are not found
        next to the CSV (e.g. the project folder of an exported table).

    Returns
    -------
    (rows, classes)
        The rows and the class names (index = class id).

    Raises
    ------
    CohortError
        Missing or empty file, missing column, bad number, empty box, unknown class, fewer than
        ``min_classes`` classes, missing slide file, or a box outside its slide; the message names
        the file and the row.
    SlideError
        A slide that cannot be opened (names the slide file).
    """
    csv_path = Path(csv_path)
    bases = [csv_path.parent, *(Path(d) for d in search_dirs)]
    rows: list[PatchLabel] = []
    allowed = list(classes) if classes else None
    for row in read_labels(csv_path):
        if allowed is not None and row.label not in allowed:
            raise CohortError(
                f"{csv_path} row {row.line}: unknown class {row.label!r}"
                f" (classes: {', '.join(allowed)})"
            )
        path = Path(row.slide)
        if not path.is_absolute():
            candidates = [(b / row.slide).resolve() for b in bases]
            path = next((c for c in candidates if c.exists()), candidates[0])
        rows.append(PatchLabel(row.slide, path, *row.box, row.label, row.trusted, row.line))
    if not rows:
        raise CohortError(f"{csv_path}: empty label file (no patch rows)")
    found = sorted({r.label for r in rows})
    names = allowed if allowed is not None else found
    if len(found) < min_classes:
        raise CohortError(
            f"{csv_path}: only {len(found)} class ({', '.join(found)}) in the labels; "
            f"training needs at least {min_classes}"
        )
    if check_slides:
        _check_boxes(csv_path, rows)
    return rows, names


def _check_boxes(csv_path: Path, rows: Sequence[PatchLabel]) -> None:
    """Every slide exists and opens, and every box lies inside its slide."""
    sizes: dict[Path, tuple[int, int]] = {}
    for r in rows:
        if r.path not in sizes:
            if not r.path.is_file():
                raise CohortError(f"{csv_path} row {r.row}: slide file not found: {r.path}")
            slide = open_slide(r.path)
            try:
                sizes[r.path] = slide.dimensions
            finally:
                slide.close()
        width, height = sizes[r.path]
        if r.x < 0 or r.y < 0 or r.x + r.width > width or r.y + r.height > height:
            raise CohortError(
                f"{csv_path} row {r.row}: patch ({r.x}, {r.y}, {r.width}x{r.height}) lies outside "
                f"slide {r.slide} ({width}x{height})"
            )


def _slide_text(path: Path, out_csv: Path) -> str:
    """Slide path as written into an output table: relative to it when possible."""
    try:
        return os.path.relpath(path, out_csv.parent.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


def write_labels_csv(
    csv_path: str | os.PathLike[str],
    rows: Sequence[PatchLabel],
    labels: Sequence[str] | None = None,
    extra: dict[str, Sequence[object]] | None = None,
) -> None:
    """Write a ``labels.csv`` atomically (slide paths relative to it).

    Parameters
    ----------
    rows
        The patches.
    labels
        Labels to write instead of ``row.label`` (e.g. refined classes).
    extra
        Further columns (name -> one value per row).
    """
    csv_path = Path(csv_path)
    extra = extra or {}
    with atomic_write(csv_path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*LABEL_COLUMNS, "trusted", *extra])
        for i, r in enumerate(rows):
            label = labels[i] if labels is not None else r.label
            values = [_fmt(v[i]) for v in extra.values()]
            writer.writerow(
                [
                    _slide_text(r.path, csv_path),
                    r.x,
                    r.y,
                    r.width,
                    r.height,
                    label,
                    int(r.trusted),
                    *values,
                ]
            )


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def write_flags_csv(
    csv_path: str | os.PathLike[str],
    rows: Sequence[PatchLabel],
    flags: Iterable[tuple[int, str, str, float, float]],
) -> None:
    """Write the ranked review list ``slide,x,y,width,height,given,suggested,confidence,g``.

    Parameters
    ----------
    flags
        ``(row index, given, suggested, confidence, g)`` in rank order.
    """
    csv_path = Path(csv_path)
    with atomic_write(csv_path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FLAG_COLUMNS)
        for index, given, suggested, confidence, g in flags:
            r = rows[index]
            writer.writerow(
                [
                    _slide_text(r.path, csv_path),
                    r.x,
                    r.y,
                    r.width,
                    r.height,
                    given,
                    suggested,
                    f"{confidence:.4f}",
                    f"{g:.4f}",
                ]
            )


def write_refinement_outputs(
    out_dir: str | os.PathLike[str],
    rows: Sequence[PatchLabel],
    classes: Sequence[str],
    refined: np.ndarray,
    flags: Iterable[tuple[int, int, int, float, float]],
) -> None:
    """Write a label-refinement run's ``refined_labels.csv`` and ``flags.csv``.

    Parameters
    ----------
    out_dir
        The run folder.
    rows
        The training patches, in the order of ``refined``.
    classes
        Class names by index.
    refined
        ``(N, M)`` refined soft labels.
    flags
        ``(row index, given class, suggested class, confidence, g)`` in rank order.
    """
    out_dir = Path(out_dir)
    write_labels_csv(
        out_dir / REFINED_LABELS_CSV,
        rows,
        labels=[classes[int(k)] for k in refined.argmax(1)],
        extra={
            "given": [r.label for r in rows],
            "confidence": refined.max(1).tolist(),
            **{f"p_{name}": refined[:, i].tolist() for i, name in enumerate(classes)},
        },
    )
    write_flags_csv(
        out_dir / FLAGS_CSV,
        rows,
        [(i, classes[given], classes[suggested], c, g) for i, given, suggested, c, g in flags],
    )


def read_patch_image(
    slide: SlideSource, x: int, y: int, width: int, height: int, size: int
) -> np.ndarray:
    """A level-0 box as ``(size, size, 3)`` uint8 (:func:`~pathviewer.core.slide.read_box`)."""
    return read_box(slide, (x, y, width, height), size)


class PatchDataset(Dataset):
    """Patches of a label table read from their slides, as ``(3, S, S)`` floats in [0, 1].

    Slides are opened on first use and kept open (one handle per slide and process, so data
    loader workers each open their own).

    Parameters
    ----------
    rows
        The table rows.
    input_size
        Side ``S`` of the returned images.
    cache
        Keep decoded patches in memory (small tables; avoids re-reading every epoch).
    """

    def __init__(self, rows: Sequence[PatchLabel], input_size: int = 224, cache: bool = False):
        self.rows = list(rows)
        self.input_size = int(input_size)
        self.cache = cache
        self._slides = SlidePool()
        self._memo: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _slide(self, path: Path) -> SlideSource:
        return self._slides.get(path)

    def __getitem__(self, index: int) -> torch.Tensor:
        cached = self._memo.get(index)
        if cached is not None:
            return cached
        r = self.rows[index]
        image = read_patch_image(self._slide(r.path), r.x, r.y, r.width, r.height, self.input_size)
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
        if self.cache:
            self._memo[index] = tensor
        return tensor

    def close(self) -> None:
        """Close the open slides."""
        self._slides.close()


class ArrayDataset(Dataset):
    """In-memory images as a dataset (tests, benchmarks).

    Parameters
    ----------
    images
        ``(N, C, H, W)`` floats in [0, 1], or ``(N, H, W, C)`` uint8 (converted).
    """

    def __init__(self, images: np.ndarray | torch.Tensor) -> None:
        array = torch.as_tensor(np.asarray(images))
        if array.dtype == torch.uint8:
            array = array.permute(0, 3, 1, 2).float() / 255.0
        if array.ndim != 4:
            raise ValueError(f"images must be 4-D, got shape {tuple(array.shape)}")
        self.images = array.float().contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]
