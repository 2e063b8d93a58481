"""Training data: tiled cohort, patch pixels, balanced two-view sampling (NGSD steps 1-3).

* :func:`tile_cohort` tiles every slide of a cohort split (cached indices) and fails with a
  message naming the slide and row when a slide has no tissue.
* :class:`PatchStore` gives the pixels of any patch of the cohort, either from RAM (preloaded
  once when they fit in a budget) or straight from the slide files (one handle per process).
* :class:`BalancedBatchSampler` draws each batch from a generator seeded by ``(seed, step)``, so
  a run is reproducible and a resumed run draws exactly the batches the killed one would have.
* :class:`TwoViewDataset` returns two independent augmentations of a patch -- the teacher view
  and the student view.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pathviewer.core.cohort import CohortEntry
from pathviewer.core.errors import TrainingError
from pathviewer.core.progress import Progress
from pathviewer.core.slide import SlideSource, open_slide
from pathviewer.core.slide_pool import SlidePool
from pathviewer.core.stain import SourceStains, StainNormalizer
from pathviewer.core.tiling import PatchIndex, iter_tile_slide, read_patch


@dataclass
class TiledSlide:
    """A cohort entry with its patch index."""

    entry: CohortEntry
    index: PatchIndex


def tile_cohort(
    entries: Sequence[CohortEntry],
    patch_size: int,
    read_downsample: float,
    threshold: float,
    cache_dir: str | os.PathLike[str] | None,
) -> Generator[Progress, None, list[TiledSlide]]:
    """Tile every slide of ``entries`` (Tiling + Background filter).

    Raises
    ------
    TrainingError
        A slide has no patch above the background threshold (message names the slide and row).
    SlideError
        A slide cannot be opened or read.
    """
    tiled: list[TiledSlide] = []
    for number, entry in enumerate(entries, start=1):
        slide = open_slide(entry.path)
        try:
            job = iter_tile_slide(slide, patch_size, read_downsample, threshold, cache_dir)
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    index: PatchIndex = stop.value
                    break
                yield Progress(
                    "tiling",
                    number - 1,
                    len(entries),
                    f"{entry.slide}: {event.done}/{event.total or 0} candidates",
                )
        finally:
            slide.close()
        if len(index) == 0:
            raise TrainingError(
                f"{entry.slide} (cohort row {entry.row}): no tissue found -- no {patch_size} px "
                f"patch has an edge score above {threshold:g}; check the slide or lower --threshold"
            )
        index.slide = str(entry.path)
        tiled.append(TiledSlide(entry, index))
        yield Progress("tiling", number, len(entries), f"{entry.slide}: {len(index)} patches")
    return tiled


class PatchStore:
    """Pixels of the patches of several tiled slides, addressed by one global patch number.

    Parameters
    ----------
    slides
        Tiled slides; patch ``i`` of slide ``s`` has number ``offsets[s] + i``.
    normalizer
        Optional fitted stain normaliser applied to every patch as it is read.
    """

    def __init__(
        self, slides: Sequence[TiledSlide], normalizer: StainNormalizer | None = None
    ) -> None:
        self.slides = list(slides)
        # Stain normalisation is part of reading a patch, so training, validation and inference
        # see the same pixels for the same box.
        self.normalizer = normalizer if normalizer is not None and normalizer.fitted else None
        sizes = [len(t.index) for t in self.slides]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.slide_of = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
        self.read_size = self.slides[0].index.read_size if self.slides else 0
        self.pixels: np.ndarray | None = None
        # Per-slide stains (normaliser scope "slide"), estimated on first use from the same
        # sample of raw patches in every process, so workers and the main process agree.
        self._sources: dict[int, SourceStains | None] = {}
        self._pool = SlidePool()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def nbytes(self) -> int:
        """Bytes the preloaded pixels would take."""
        return len(self) * self.read_size * self.read_size * 3

    def preload(self) -> Generator[Progress, None, None]:
        """Read every patch into RAM once (fast sampling afterwards)."""
        pixels = np.empty((len(self), self.read_size, self.read_size, 3), np.uint8)
        for number in range(len(self.slides)):
            tiled = self.slides[number]
            slide = open_slide(tiled.entry.path)
            try:
                start = int(self.offsets[number])
                for i, (x, y) in enumerate(tiled.index.coords):
                    pixels[start + i] = self._normalised(
                        read_patch(
                            slide,
                            int(x),
                            int(y),
                            tiled.index.patch_size,
                            tiled.index.read_downsample,
                        ),
                        number,
                    )
            finally:
                slide.close()
            yield Progress("loading patches", number + 1, len(self.slides), tiled.entry.slide)
        self.pixels = pixels

    def _slide(self, number: int) -> SlideSource:
        return self._pool.get(self.slides[number].entry.path)

    def get(self, patch: int) -> np.ndarray:
        """``(s, s, 3)`` uint8 pixels of patch number ``patch``."""
        if self.pixels is not None:
            return self.pixels[patch]
        number = int(self.slide_of[patch])
        tiled = self.slides[number]
        x, y = tiled.index.coords[patch - int(self.offsets[number])]
        return self._normalised(self._raw(number, patch - int(self.offsets[number])), number)

    def _raw(self, number: int, i: int) -> np.ndarray:
        tiled = self.slides[number]
        x, y = tiled.index.coords[i]
        return read_patch(
            self._slide(number), int(x), int(y), tiled.index.patch_size, tiled.index.read_downsample
        )

    def _normalised(self, pixels: np.ndarray, number: int) -> np.ndarray:
        if self.normalizer is None:
            return pixels
        source = None
        if self.normalizer.scope == "slide":
            if number not in self._sources:
                sample = slide_stain_sample(len(self.slides[number].index))
                self._sources[number] = self.normalizer.estimate_source(
                    self._raw(number, int(i)) for i in sample
                )
            source = self._sources[number]
        return self.normalizer.transform(pixels, source)

    def close(self) -> None:
        """Close the slide handles of this process."""
        self._pool.close()


#: Patches of a slide whose pooled pixels estimate the slide's own stains (scope "slide").
SLIDE_STAIN_PATCHES = 48


def slide_stain_sample(n_patches: int) -> np.ndarray:
    """Sorted patch numbers (within a slide) that estimate its stains: a fixed random sample.

    It depends on the slide's patch count only, so a slide gets the same sample (and the same
    stains) wherever it sits in a store: in training, validation and inference.
    """
    rng = np.random.default_rng([7, n_patches])
    return np.sort(rng.choice(n_patches, min(SLIDE_STAIN_PATCHES, n_patches), replace=False))


def build_augmentation(input_size: int, stain_sigma: float = 0.0) -> torch.nn.Module:
    """The paper's augmentation ([0051]) plus optional H&E stain jitter.

    The paper's: flips p=0.5, colour jitter p=0.5, grayscale p=0.2, random resized crop of
    80-100 % of the patch to ``input_size``.  ``stain_sigma`` > 0 adds HED-space jitter (Tellez
    et al. 2018) with that multiplicative half-width and a quarter of it as additive OD bias:
    on real cohorts the stain differs between slides, and without it a weak learner separates
    slides by stain instead of by tissue.
    """
    from torchvision.transforms import v2

    stain: list[torch.nn.Module] = []
    if stain_sigma > 0:
        from pathviewer.ml.augment import HEDJitter

        stain.append(HEDJitter(sigma=stain_sigma, bias=stain_sigma / 4))
    return v2.Compose(
        [
            v2.RandomResizedCrop(input_size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.5),
            *stain,
            # No hue jitter: torchvision's hue shift goes through HSV and costs ~30 ms per patch
            # on a CPU (60x the rest of the pipeline); brightness/contrast/saturation are cheap.
            v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.0)], p=0.5),
            v2.RandomGrayscale(0.2),
        ]
    )


def to_input(pixels: np.ndarray, input_size: int) -> torch.Tensor:
    """A patch resized to ``input_size`` as a ``(3, s, s)`` uint8 tensor (inference view)."""
    if pixels.shape[0] != input_size or pixels.shape[1] != input_size:
        pixels = np.asarray(
            Image.fromarray(pixels).resize((input_size, input_size), Image.Resampling.BILINEAR)
        )
    return torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).contiguous()


class TwoViewDataset(torch.utils.data.Dataset):
    """Items are keys ``(step, slot, patch)``; returns teacher view, student view, patch (uint8).

    The augmentation randomness of an item is seeded by ``(seed, step, slot)``, so the same step
    gives the same views in any worker, and after a resume.
    """

    def __init__(
        self,
        store: PatchStore,
        input_size: int,
        seed: int,
        views: int = 2,
        stain_sigma: float = 0.0,
        plain_teacher: bool = False,
    ) -> None:
        self.store = store
        self.input_size = input_size
        self.seed = seed
        self.views = views
        # The teacher's view unaugmented (as inference sees the patch): its scores, which fill
        # the bank, then vary with the patch rather than with the random view.
        self.plain_teacher = plain_teacher and views > 1
        self.augment = build_augmentation(input_size, stain_sigma)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
        step, slot, patch = key
        image = torch.from_numpy(np.array(self.store.get(patch), copy=True)).permute(2, 0, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, step, slot)) & 0x7FFFFFFF)
            views = [self.augment(image) for _ in range(self.views)]
        if self.plain_teacher:
            views[0] = to_input(image.permute(1, 2, 0).numpy(), self.input_size)
        return (*views, torch.tensor(patch, dtype=torch.int64))


class FeatureViews(torch.utils.data.Dataset):
    """:class:`TwoViewDataset`'s items from features computed once per patch (frozen encoder).

    Every view of a patch is its one feature vector: features of augmented views would have to
    be computed at every step, which is what freezing the encoder saves.
    """

    def __init__(self, features: np.ndarray, views: int = 2) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        self.views = views

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
        patch = key[2]
        view = self.features[patch]
        return (*([view] * self.views), torch.tensor(patch, dtype=torch.int64))


class BalancedBatchSampler(torch.utils.data.Sampler):
    """Batches of keys mixing positive- and negative-slide patches (NGSD step 3, Sampling).

    Parameters
    ----------
    positives, negatives
        Patch numbers of positive / negative slides.
    batch_size
        Patches per batch.
    positive_fraction
        Share of positive-slide patches in each batch (0.5 = balanced).
    start, stop
        Steps to generate (``range(start, stop)``).
    seed
        Run seed; batch ``s`` is drawn from ``default_rng([seed, s])``.
    mined
        Share of the positive-slide patches of a batch drawn in proportion to
        ``weights(step)`` (hard-positive mining) instead of uniformly.
    weights
        ``weights(step)`` -> a weight per entry of ``positives``, or None (uniform) -- called
        when the batch is made, which can be a few steps ahead of training.
    """

    def __init__(
        self,
        positives: np.ndarray,
        negatives: np.ndarray,
        batch_size: int,
        positive_fraction: float,
        start: int,
        stop: int,
        seed: int,
        mined: float = 0.0,
        weights: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        self.mined = float(mined)
        self.weights = weights
        self.positives = np.asarray(positives, np.int64)
        self.negatives = np.asarray(negatives, np.int64)
        self.batch_size = batch_size
        self.n_pos = int(round(batch_size * positive_fraction))
        if len(self.negatives) == 0:
            self.n_pos = batch_size
        if len(self.positives) == 0:
            self.n_pos = 0
        self.start, self.stop, self.seed = start, stop, seed

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def batch(self, step: int) -> np.ndarray:
        """Patch numbers of batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        pos = rng.choice(self.positives, self.n_pos, replace=len(self.positives) < self.n_pos)
        weights = self.weights(step) if self.weights is not None and self.mined > 0 else None
        if weights is not None and weights.sum() > 0:
            n_mined = int(round(self.mined * self.n_pos))
            pos[:n_mined] = rng.choice(self.positives, n_mined, p=weights / weights.sum())
        n_neg = self.batch_size - self.n_pos
        neg = rng.choice(self.negatives, n_neg, replace=len(self.negatives) < n_neg)
        return np.concatenate([pos, neg]).astype(np.int64)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.stop):
            yield [(step, slot, int(p)) for slot, p in enumerate(self.batch(step))]


def make_loader(
    dataset: torch.utils.data.Dataset,
    sampler: BalancedBatchSampler,
    workers: int,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """DataLoader over a batch sampler (workers prefetch while the model trains)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def slide_label_mask(store: PatchStore, label: int) -> np.ndarray:
    """Patch numbers of slides with ``label``."""
    labels = np.array([t.entry.label for t in store.slides])
    return np.flatnonzero(labels[store.slide_of] == label).astype(np.int64)


def cache_dir_for(out_dir: str | os.PathLike[str]) -> Path:
    """The patch-index cache folder shared by runs (user data dir), or the run's own folder."""
    from pathviewer.paths import user_data_dir

    try:
        path = user_data_dir() / "tile-cache"
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(out_dir) / "tile-cache"
