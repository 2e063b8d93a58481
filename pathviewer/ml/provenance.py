"""Where a model came from, and whether a slide looks like what it was trained on.

A heatmap is only as good as the match between the slide and the training slides: a model
trained at 10x on one lab's staining paints confident nonsense on a 40x scan or on another
stain.  :func:`training_provenance` records what inference needs to tell (resolution, patch
geometry, stain normalisation, the training cohort's fingerprint and its range of stain
statistics) in ``model.pt``; :func:`slide_warnings` compares one slide against it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathviewer.core.stain import stain_statistics

#: Patches per slide whose stain statistics describe it.
STAT_PATCHES = 24
#: Relative MPP difference above which a slide is "at another magnification".
MPP_TOLERANCE = 0.15
#: Margin (as a share of the training range, at least this absolute amount) beyond which a
#: slide's mean stain concentration counts as unlike the training slides.
STAIN_MARGIN = 0.5
STAIN_MARGIN_MIN = 0.05


def cohort_fingerprint(entries: Sequence[Any]) -> str:
    """Short hash of a training cohort: slide names, file sizes and labels, in order."""
    digest = hashlib.sha256()
    for entry in entries:
        try:
            size = Path(entry.path).stat().st_size
        except OSError:
            size = -1
        digest.update(f"{entry.slide}\0{size}\0{entry.label}\n".encode())
    return digest.hexdigest()[:16]


def slide_stain_summary(patches: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean H and E concentrations of a slide's tissue, from a sample of its patches."""
    if not patches:
        return {"mean_h": 0.0, "mean_e": 0.0}
    stats = stain_statistics(np.concatenate([p.reshape(-1, 3) for p in patches]))
    return {"mean_h": stats["mean_h"], "mean_e": stats["mean_e"]}


def sample_patches(store: Any, slide: int, count: int = STAT_PATCHES, seed: int = 0) -> list:
    """Up to ``count`` patches of slide number ``slide`` of a patch store, evenly drawn."""
    start, stop = int(store.offsets[slide]), int(store.offsets[slide + 1])
    rng = np.random.default_rng([seed, slide])
    picks = rng.choice(np.arange(start, stop), min(count, stop - start), replace=False)
    return [np.asarray(store.get(int(i))) for i in np.sort(picks)]


def training_provenance(
    store: Any,
    level0_mpp: float | None,
    read_downsample: float,
    patch_size: int,
    input_size: int,
    normalizer: dict[str, Any] | None,
    seed: int = 0,
) -> dict[str, Any]:
    """The provenance record of a run (plain types: safe for ``torch.load(weights_only=True)``).

    Parameters
    ----------
    store
        The training patches, *before* stain normalisation (their stain is what slides at
        inference are compared with).
    level0_mpp
        Microns per pixel of the training slides' level 0 (None when unknown).
    read_downsample, patch_size, input_size
        The patch geometry of the run.
    normalizer
        ``StainNormalizer.to_dict()`` or None.
    """
    per_slide = [
        slide_stain_summary(sample_patches(store, i, seed=seed)) for i in range(len(store.slides))
    ]
    h = [s["mean_h"] for s in per_slide]
    e = [s["mean_e"] for s in per_slide]
    return {
        "level0_mpp": level0_mpp,
        "mpp": level0_mpp * read_downsample if level0_mpp else None,
        "magnification": 10.0 / (level0_mpp * read_downsample) if level0_mpp else None,
        "read_downsample": read_downsample,
        "patch_size": patch_size,
        "input_size": input_size,
        "stain_norm": normalizer,
        "cohort_fingerprint": cohort_fingerprint([t.entry for t in store.slides]),
        "training_slides": [t.entry.slide for t in store.slides],
        "stain_range": {"h": [min(h), max(h)], "e": [min(e), max(e)]},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def slide_warnings(
    provenance: dict[str, Any] | None,
    slide_name: str,
    slide_mpp: float | None,
    stain: dict[str, float] | None,
) -> list[str]:
    """Reasons to distrust a model's heatmap on one slide (empty when it looks like training).

    Parameters
    ----------
    provenance
        ``model.pt``'s record (None for models saved before it existed: nothing to compare).
    slide_name
        For the messages.
    slide_mpp
        The slide's level-0 microns per pixel (None when it states none).
    stain
        :func:`slide_stain_summary` of the slide's patches (None: not checked).
    """
    if not provenance:
        return []
    out: list[str] = []
    trained = provenance.get("level0_mpp")
    if trained and slide_mpp and abs(slide_mpp - trained) / trained > MPP_TOLERANCE:
        out.append(
            f"{slide_name}: scanned at {slide_mpp:.3f} um/px, the model was trained on "
            f"{trained:.3f} um/px slides (patches cover a different area of tissue)"
        )
    if trained and not slide_mpp:
        out.append(
            f"{slide_name}: the slide states no resolution (MPP); cannot check magnification"
        )
    ranges = provenance.get("stain_range") or {}
    if stain:
        for key, label in (("h", "haematoxylin"), ("e", "eosin")):
            bounds = ranges.get(key)
            value = stain.get(f"mean_{key}")
            if not bounds or value is None:
                continue
            lo, hi = float(bounds[0]), float(bounds[1])
            margin = max(STAIN_MARGIN * (hi - lo), STAIN_MARGIN_MIN)
            if value < lo - margin or value > hi + margin:
                out.append(
                    f"{slide_name}: {label} density {value:.2f} is outside the training slides' "
                    f"range {lo:.2f}-{hi:.2f} (different stain or tissue)"
                )
    return out
