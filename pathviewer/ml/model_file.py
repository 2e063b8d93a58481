"""A trained slide model's file (``model.pt``) and the scorers that apply it to patches.

:meth:`ModelFile.load` reads a file written by any slide-model trainer (``ngsd``, ``naive``,
``abmil``), rebuilds its network and checks the weights fit it.  :meth:`ModelFile.scorer` returns
the object that turns patch batches into patch probabilities and a slide score; every kind has
the same interface, so inference and the jobs never ask which method made a model:

* :meth:`Scorer.batch` -- score one batch of patches; returns the patch probabilities that can
  be shown at once (a patch classifier's), or None when they only exist at the end (attention
  MIL's weights are relative to the whole slide);
* :meth:`Scorer.finish` -- the patch probabilities and slide score of a slide's patches.

:data:`SCORERS` (method -> scorer class) is the one place where a method name picks a kind.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathviewer.core.errors import CheckpointError, PathViewerError, shown
from pathviewer.ml import checkpoint as ckpt
from pathviewer.ml.bank import logit, sigmoid
from pathviewer.ml.config import NGSDConfig
from pathviewer.ml.device import autocast
from pathviewer.ml.encoders import weights_problem
from pathviewer.ml.models import AttentionMIL, build_classifier
from pathviewer.ml.stain_prior import StainPrior, input_features


def pool_scores(
    probs: np.ndarray, pooling: str = "topk", top_k: int = 5, threshold: float = 0.5
) -> float:
    """Slide score from patch probabilities.

    Parameters
    ----------
    probs
        Patch probabilities of one slide.
    pooling
        ``max``; ``topk`` (mean of the ``top_k`` highest); ``fraction`` (share of patches above
        ``threshold``).
    top_k
        Patches averaged by ``topk``.
    threshold
        Probability above which ``fraction`` counts a patch positive.

    Returns
    -------
    float
        The slide score (0 for a slide without patches).

    Raises
    ------
    ValueError
        Unknown ``pooling``.
    """
    probs = np.asarray(probs, np.float64)
    if probs.size == 0:
        return 0.0
    if pooling == "max":
        return float(probs.max())
    if pooling == "topk":
        k = max(1, min(top_k, probs.size))
        return float(np.sort(probs)[-k:].mean())
    if pooling == "fraction":
        return float((probs > threshold).mean())
    raise ValueError(f"unknown pooling {pooling!r} (use max, topk or fraction)")


class Scorer(ABC):
    """Scores patch batches of one or more slides with a network (see the module docstring).

    Batches are fed in order; :meth:`finish` takes the outputs of the oldest patches not yet
    finished, so one stream of batches can run over several slides (reading then overlaps the
    forward pass throughout a cohort) and be cut into slides afterwards.

    Parameters
    ----------
    network
        The model; put in eval mode here.
    device
        Where ``network`` lives; batches are moved there.
    input_size
        Network input side in pixels (what the patch loader resizes to).
    amp
        bfloat16 autocast on CUDA.
    """

    def __init__(
        self, network: torch.nn.Module, device: torch.device, input_size: int, amp: bool = True
    ) -> None:
        self.network = network.eval()
        self.device = device
        self.input_size = input_size
        self.amp = amp
        self._outputs: list[np.ndarray] = []

    @classmethod
    @abstractmethod
    def build_network(cls, config: NGSDConfig) -> torch.nn.Module:
        """A randomly initialised network of this kind for ``config`` (weights are loaded after)."""

    @classmethod
    @abstractmethod
    def from_model_file(cls, model: ModelFile, pooling: str | None = None) -> Scorer:
        """The scorer of a loaded model file (``pooling`` overrides the trained one, if used)."""

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch outputs of a float batch in [0, 1] already on the device."""

    @abstractmethod
    def _slide(self, outputs: np.ndarray) -> tuple[np.ndarray, float]:
        """Patch probabilities and slide score of one slide's stacked outputs (non-empty)."""

    @abstractmethod
    def _live(self, outputs: np.ndarray) -> np.ndarray | None:
        """What :meth:`batch` returns for a batch's outputs."""

    def batch(self, images: torch.Tensor) -> np.ndarray | None:
        """Score one batch and keep its outputs for :meth:`finish`.

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` uint8 patches at ``input_size`` (as the patch loader makes them).

        Returns
        -------
        numpy.ndarray or None
            The batch's patch probabilities (float32) when they are final now, else None.
        """
        with torch.inference_mode():
            x = images.to(self.device, non_blocking=True).float().div_(255)
            with autocast(self.device, self.amp):
                out = self._forward(x)
            values = out.float().cpu().numpy()
        self._outputs.append(values)
        return self._live(values)

    def finish(self, count: int | None = None) -> tuple[np.ndarray, float]:
        """Patch probabilities and slide score of the next ``count`` patches scored.

        Parameters
        ----------
        count
            How many of the oldest unfinished patches make the slide; all of them when None.

        Returns
        -------
        (numpy.ndarray, float)
            float32 probabilities of those patches, in order, and the slide score (0 for none).
        """
        outputs = np.concatenate(self._outputs) if self._outputs else np.zeros(0, np.float32)
        count = len(outputs) if count is None else count
        if count > len(outputs):
            raise ValueError(f"finish({count}) with only {len(outputs)} patches scored")
        part, rest = outputs[:count], outputs[count:]
        self._outputs = [rest] if len(rest) else []
        if not len(part):
            return np.zeros(0, np.float32), 0.0
        probs, score = self._slide(part)
        return np.asarray(probs, np.float32), float(score)


class PatchScorer(Scorer):
    """A patch classifier (``ngsd``, ``naive``): softmax probabilities, pooled into a score.

    Parameters
    ----------
    network, device, input_size, amp
        As :class:`Scorer`.
    pooling, top_k, threshold
        Slide pooling (:func:`pool_scores`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        device: torch.device,
        input_size: int,
        amp: bool = True,
        pooling: str = "topk",
        top_k: int = 5,
        threshold: float = 0.5,
        prior: StainPrior | None = None,
        prior_weight: float = 0.0,
        net_reference: float = 0.0,
    ) -> None:
        super().__init__(network, device, input_size, amp)
        self.pooling, self.top_k, self.threshold = pooling, top_k, threshold
        self.prior, self.prior_weight, self.net_reference = prior, prior_weight, net_reference

    def batch(self, images: torch.Tensor) -> np.ndarray | None:
        """As :meth:`Scorer.batch`; with a stain prior, the patches' stain features are kept too.

        The live probabilities are the network's alone: the prior needs the whole slide.
        """
        live = super().batch(images)
        if self.prior is not None:
            features = input_features(images)
            self._outputs[-1] = np.hstack([self._outputs[-1][:, None], features])
        return live

    def blend(self, network_probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """One slide's patch probabilities: the network's and the stain prior's log-odds mixed.

        Both are taken relative to the training negative-slide patches, mixed with the prior's
        weight of the bank's scores (``prior_weight``), as the bank mixed them in training.
        """
        assert self.prior is not None
        net = logit(network_probs) - self.net_reference
        prior = self.prior.logits(features, np.zeros(len(features), np.int64))
        mixed = self.prior_weight * prior + (1.0 - self.prior_weight) * net
        return sigmoid(mixed).astype(np.float32)

    @classmethod
    def build_network(cls, config: NGSDConfig) -> torch.nn.Module:
        """A two-class :class:`~pathviewer.ml.models.PatchClassifier` of ``config.arch``."""
        return build_classifier(2, config.arch, None, config.input_size)

    @classmethod
    def from_model_file(cls, model: ModelFile, pooling: str | None = None) -> Scorer:
        """The scorer of ``model``, pooling with ``pooling`` or the trained setting."""
        cfg = model.config
        prior_data = model.data.get("stain_prior")
        prior = StainPrior.from_dict(prior_data) if prior_data else None
        return cls(
            model.network,
            model.device,
            cfg.input_size,
            cfg.amp,
            pooling or cfg.pooling,
            cfg.top_k,
            cfg.prob_threshold,
            prior,
            float(prior_data.get("weight", 0.0)) if prior_data else 0.0,
            float(prior_data.get("net_reference", 0.0)) if prior_data else 0.0,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x).float(), dim=1)[:, 1]

    def _live(self, outputs: np.ndarray) -> np.ndarray | None:
        return outputs  # a patch's probability does not depend on the rest of the slide

    def _slide(self, outputs: np.ndarray) -> tuple[np.ndarray, float]:
        probs = outputs if self.prior is None else self.blend(outputs[:, 0], outputs[:, 1:])
        return probs, pool_scores(probs, self.pooling, self.top_k, self.threshold)


class AttentionMILScorer(Scorer):
    """Attention MIL (``abmil``): patch features now, attention and bag score per slide.

    A patch's score is its attention weight relative to the slide's other patches
    (:meth:`~pathviewer.ml.models.AttentionMIL.scores_from_features`), so :meth:`batch` has
    nothing to show and returns None.
    """

    network: AttentionMIL

    @classmethod
    def build_network(cls, config: NGSDConfig) -> torch.nn.Module:
        """An :class:`~pathviewer.ml.models.AttentionMIL` on a ``config.arch`` encoder."""
        return AttentionMIL(build_classifier(2, config.arch, None, config.input_size))

    @classmethod
    def from_model_file(cls, model: ModelFile, pooling: str | None = None) -> Scorer:
        """The scorer of ``model`` (``pooling`` does not apply: the bag score is learnt)."""
        return cls(model.network, model.device, model.config.input_size, model.config.amp)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.instance_features(x)

    def _live(self, outputs: np.ndarray) -> np.ndarray | None:
        return None

    def _slide(self, outputs: np.ndarray) -> tuple[np.ndarray, float]:
        return self.network.scores_from_features(outputs)


#: The scorer of each slide-model method: the only place a method name selects a kind of model.
SCORERS: dict[str, type[Scorer]] = {
    "ngsd": PatchScorer,
    "naive": PatchScorer,
    "abmil": AttentionMILScorer,
}


@dataclass
class ModelFile:
    """A loaded ``model.pt``: its settings, its network (eval mode) and the raw file.

    Attributes
    ----------
    path
        The file.
    method
        The trainer that wrote it (a key of :data:`SCORERS`).
    config
        The training settings.
    patch_size
        Patch side in level-0 pixels.
    read_downsample
        Downsample the patches were read at (resolved from the magnification in training).
    provenance
        The training record (:mod:`pathviewer.ml.provenance`), None in files without one.
    network
        The network with the file's weights, in eval mode, on ``device``.
    device
        Where ``network`` lives.
    data
        The file's dict as read (``describe_model``, ``slide_checks`` and the stain normaliser
        read it).
    """

    path: Path
    method: str
    config: NGSDConfig
    patch_size: int
    read_downsample: float
    provenance: dict[str, Any] | None
    network: torch.nn.Module
    device: torch.device
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None) -> ModelFile:
        """Read a model file, rebuild its network and load the weights.

        Parameters
        ----------
        path
            A ``model.pt`` written by a slide-model trainer.
        device
            Where to put the network (CPU when None).

        Raises
        ------
        CheckpointError
            Missing, corrupt or foreign file, an unknown method, or weights that do not fit
            the recorded architecture -- always one short line naming the file.
        """
        path = Path(path)
        data = ckpt.load_model_file(path)
        method = str(data["method"])
        kind = SCORERS.get(method)
        if kind is None:
            raise CheckpointError(
                f"{path}: unknown model method {method[:40]!r} (known: {', '.join(SCORERS)})"
            )
        if not isinstance(data["config"], dict):
            raise CheckpointError(f"{path}: model file's config is not a settings dict")
        try:
            cfg = NGSDConfig.from_dict(data["config"])
            cfg.validate()
        except (TypeError, ValueError, KeyError, PathViewerError) as error:
            raise CheckpointError(
                f"{path}: model file's settings are unusable ({str(error)[:160]})"
            ) from None
        for key in ("patch_size", "read_downsample"):
            if key not in data:
                raise CheckpointError(f"{path}: model file lacks {key!r}")
        patch_size = _stored_number(path, data, "patch_size", whole=True)
        read_downsample = _stored_number(path, data, "read_downsample", whole=False)
        if data.get("stain_prior") is not None:
            try:
                StainPrior.from_dict(data["stain_prior"])
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(
                    f"{path}: model file's stain prior is unusable ({error})"
                ) from None
        try:
            network = kind.build_network(cfg)
        except CheckpointError as error:  # an unknown architecture: say which file has it
            raise CheckpointError(f"{path}: {str(error)[:200]}") from None
        problem = weights_problem(network, data["student"])
        if problem is not None:
            raise CheckpointError(
                f"{path}: weights do not fit a {cfg.arch[:40]} {method} model ({problem})"
            )
        try:
            network.load_state_dict(data["student"])
        except RuntimeError as error:  # keys and shapes fit; anything else, kept to one line
            first = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            raise CheckpointError(
                f"{path}: weights do not fit a {cfg.arch[:40]} {method} model ({first})"
            ) from None
        network.eval()
        device = device if device is not None else torch.device("cpu")
        network.to(device)
        provenance = data.get("provenance")
        return cls(
            path,
            method,
            cfg,
            int(patch_size),
            read_downsample,
            provenance if isinstance(provenance, dict) else None,
            network,
            device,
            data,
        )

    def scorer(self, pooling: str | None = None, network_only: bool = False) -> Scorer:
        """A fresh scorer for this model (see :class:`Scorer`).

        Parameters
        ----------
        pooling
            Slide pooling for patch classifiers (``max``, ``topk``, ``fraction``); the trained
            setting when None.  Attention MIL ignores it.
        network_only
            Leave the model's stain prior out of the patch probabilities (for comparisons).
        """
        scorer = SCORERS[self.method].from_model_file(self, pooling)
        if network_only and isinstance(scorer, PatchScorer):
            scorer.prior = None
        return scorer

    @property
    def has_stain_prior(self) -> bool:
        """Whether the heatmap blends a stain prior into the network's scores."""
        return self.data.get("stain_prior") is not None


def _stored_number(path: Path, data: dict[str, Any], key: str, whole: bool) -> float:
    """A positive, finite number the model file records (a whole one for sizes)."""
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"{path}: model file's {key} is {shown(value)}, not a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0 or (whole and number != int(number)):
        kind = "a positive whole number" if whole else "a positive number"
        raise CheckpointError(f"{path}: model file's {key} is {shown(value)}, not {kind}")
    return number
