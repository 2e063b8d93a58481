"""Why this region? The training patches a model finds most like a patch.

After training, every training patch is embedded once with the model's own encoder (the layer
before its classifier) and kept, L2-normalised, in ``RUN/similar.npz``.  A patch of any slide
is then embedded the same way and compared by cosine similarity: the nearest training patches,
with their slides' labels, show what the model has learnt to associate with it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathviewer.core.cohort import read_cohort, select
from pathviewer.core.errors import CohortError, PathViewerError
from pathviewer.core.progress import Progress
from pathviewer.core.slide import SlideSource, read_box
from pathviewer.ml.config import NGSDConfig
from pathviewer.ml.data import PatchStore, cache_dir_for, tile_cohort, to_input
from pathviewer.ml.inference import model_normalizer, run_scorer
from pathviewer.ml.model_file import ModelFile, Scorer

#: The index of a run's training patches (next to model.pt).
SIMILAR_NPZ = "similar.npz"


class SimilarError(PathViewerError):
    """A run has no usable index of its training patches."""


def _encoder(network: torch.nn.Module) -> Any:
    """The patch encoder of a network: a patch classifier, or attention MIL's backbone."""
    return getattr(network, "backbone", network)


class FeatureScorer(Scorer):
    """Embeds patches with a model's encoder (unit vectors) instead of scoring them."""

    @classmethod
    def build_network(cls, config: NGSDConfig) -> torch.nn.Module:
        raise NotImplementedError("a feature scorer uses a trained model file's network")

    @classmethod
    def from_model_file(cls, model: ModelFile, pooling: str | None = None) -> FeatureScorer:
        return cls(model.network, model.device, model.config.input_size, model.config.amp)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        features = _encoder(self.network).features(x).float()
        return torch.nn.functional.normalize(features, dim=1)

    def _slide(self, outputs: np.ndarray) -> tuple[np.ndarray, float]:
        return outputs, 0.0

    def _live(self, outputs: np.ndarray) -> np.ndarray | None:
        return None


def build_similar_index(
    model_path: str | Path, cohort_csv: str | Path, split: str = "train", batch_size: int = 128
) -> Generator[Progress, None, Path]:
    """Embed every patch of the cohort's ``split`` and write ``similar.npz`` beside the model.

    Returns
    -------
    Path
        The index file.
    """
    model_path = Path(model_path)
    model = ModelFile.load(model_path)
    entries = select(read_cohort(cohort_csv), split)
    if not entries:
        raise CohortError(f"{cohort_csv}: no slides in the {split} split to index")
    tiled = yield from tile_cohort(
        entries,
        model.patch_size,
        model.read_downsample,
        model.config.threshold,
        cache_dir_for(model_path.parent),
    )
    store = PatchStore(tiled, model_normalizer(model.data))
    scorer = FeatureScorer.from_model_file(model)
    try:
        for event in run_scorer(scorer, store, batch_size):
            yield Progress("similar patches", event.done, event.total)
    finally:
        store.close()
    features = scorer.finish()[0]
    boxes, slide_of = [], []
    for number, slide in enumerate(tiled):
        coords = np.asarray(slide.index.coords, np.int64).reshape(-1, 2)
        boxes.append(np.hstack([coords, np.full((len(coords), 2), slide.index.patch_size)]))
        slide_of.append(np.full(len(coords), number, np.int32))
    out = model_path.parent / SIMILAR_NPZ
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        features=features.astype(np.float16),
        boxes=np.concatenate(boxes).astype(np.int64) if boxes else np.zeros((0, 4), np.int64),
        slide=np.concatenate(slide_of) if slide_of else np.zeros(0, np.int32),
        names=np.array([s.entry.slide for s in tiled]),
        paths=np.array([str(s.entry.path) for s in tiled]),
        labels=np.array([-1 if s.entry.label is None else s.entry.label for s in tiled]),
        split=np.array(split),
    )
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class SimilarPatch:
    """A training patch like the query.

    Attributes
    ----------
    slide, path
        Its slide as the cohort names it, and the file.
    box
        Level-0 ``(x, y, width, height)``.
    label
        Its slide's label (1 tumour, 0 not, None unknown).
    similarity
        Cosine similarity of the two embeddings (1: the same).
    """

    slide: str
    path: str
    box: tuple[int, int, int, int]
    label: int | None
    similarity: float


class SimilarIndex:
    """A run's embedded training patches (see :func:`build_similar_index`)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise SimilarError(
                f"{path}: no index of this run's training patches (it is made at the end of"
                " training; runs trained before it existed need training again)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                self.features = np.asarray(data["features"], np.float32)
                self.boxes = np.asarray(data["boxes"], np.int64)
                self.slide = np.asarray(data["slide"], np.int64)
                self.names = [str(v) for v in data["names"]]
                self.paths = [str(v) for v in data["paths"]]
                self.labels = [int(v) for v in data["labels"]]
        except (OSError, KeyError, ValueError) as error:
            raise SimilarError(f"{path}: unreadable index ({error})") from None

    @classmethod
    def of_model(cls, model_path: str | Path) -> SimilarIndex:
        return cls(Path(model_path).parent / SIMILAR_NPZ)

    def __len__(self) -> int:
        return len(self.features)

    def nearest(self, feature: np.ndarray, k: int = 8) -> list[SimilarPatch]:
        """The ``k`` training patches most like ``feature`` (a unit vector), nearest first."""
        if not len(self.features):
            return []
        similarity = self.features @ np.asarray(feature, np.float32)
        order = np.argsort(-similarity)[:k]
        out = []
        for i in order.tolist():
            s = int(self.slide[i])
            x, y, w, h = (int(v) for v in self.boxes[i])
            label = self.labels[s]
            out.append(
                SimilarPatch(
                    self.names[s],
                    self.paths[s],
                    (x, y, w, h),
                    None if label < 0 else label,
                    float(similarity[i]),
                )
            )
        return out


def embed_boxes(
    model: ModelFile, slide: SlideSource, boxes: Sequence[tuple[int, int, int, int]]
) -> np.ndarray:
    """Unit embeddings ``(n, D)`` of level-0 boxes of ``slide``, read as the model reads patches.

    A per-patch stain normaliser is applied; a per-slide one is not (it needs a sample of the
    whole slide), so with one the neighbours are approximate.
    """
    normalizer = model_normalizer(model.data)
    size = max(1, round(model.patch_size / model.read_downsample))
    images = []
    for box in boxes:
        rgb = read_box(slide, box, size)
        if normalizer is not None and normalizer.scope == "patch":
            rgb = normalizer.transform(rgb)
        images.append(to_input(rgb, model.config.input_size))
    scorer = FeatureScorer.from_model_file(model)
    scorer.batch(torch.stack(images))
    return scorer.finish()[0]
