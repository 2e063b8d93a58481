"""Label refinement for noisy patch labels: gradient-density + Gaussian weighted loss, iterative
soft-label refinement, and a ranked list of suspect labels.

The method (patent CN "pathological image ... label noise", paragraphs [0095]-[0113]); each step
has its own function below:

1. **Gradient norm** (:func:`gradient_norm`).  ``p = softmax(f(x))``; the gradient of the cross
   entropy w.r.t. the logits is ``p - y``.  For a one-hot label its norm reduces to
   ``g = 1 - p_y`` in [0, 1].  For the soft labels that refinement produces we use
   ``g = 0.5 * ||p - y||_1``, which equals ``1 - p_y`` for a one-hot ``y`` and stays in [0, 1]
   for any two distributions.
2. **Gradient density** (:class:`GradientDensity`).  [0, 1] is split into ``bins`` equal regions;
   ``GD(g) = (samples in g's region) * bins`` and ``alpha_i = N / GD(g_i)``.  Mini-batches are
   small, so the region counts are an exponential moving average over batches, as in GHM-C
   (Li et al. 2019, ``momentum`` 0.75): ``counts <- m * counts + (1 - m) * batch_counts``, and the
   first batch initialises them.  ``N`` is the batch size (the EMA counts are per-batch counts).
3. **Gaussian weight** (:func:`gaussian_weights`).  ``beta_i = exp(-(g_i - mu)^2 / (2 sigma^2))``,
   ``mu`` = the "gradient learning centre" and, as paragraph [0105] writes it,
   ``sigma = sqrt(sum_i (g_i - mu)^2 / (N - 1))``: the spread of ``g`` around ``mu``, not around
   the mean of ``g`` (:func:`spread_around`; over the training set, from the prediction pass at
   the end of the previous round; floored at 0.05).  The issue text says "sample std of g"; the
   patent's formula is the one implemented.
   Beta is applied from the end of the warm-up: before it every ``g`` is near ``1 - 1/M`` and a
   Gaussian would select a few samples at random.  The patent's ``1 / (sigma sqrt(2 pi))`` factor is dropped: it is the same for every
   sample of a batch and the weights are normalised anyway.  The loss is
   ``mean(w_i * CE(y_i, p_i))`` with ``w = alpha * beta`` normalised so that the mean weight of
   the batch is 1 (:func:`sample_weights`), which keeps the learning rate comparable with CE.
4. **Label refinement** (:func:`refine_labels`), after every round past the warm-up::

       y' = (1 - g^gamma) * y_hot + g^gamma * p

   The patent prints ``(1 - g^gamma) * y_hot + g^gamma * (p - y_hot)``; its entries are negative
   and do not sum to 1 (it is not a label), so we implement the convex combination above, which
   is what the text describes ("large g: strong correction; g -> 0: none").  The patent gives no
   value for ``gamma``; the default 3 mixes in the prediction by 0.73 at ``g = 0.9`` but only
   by 0.13 at ``g = 0.5``, so a correct but not yet well-learnt label (a minority class early in
   training) is barely moved.  It was chosen among 1, 2 and 3 by the mean best *noisy*
   validation accuracy over the six benchmark training sets (0.735, 0.770, 0.779), never by
   test accuracy; with ``gamma = 1`` refinement drifted minority classes towards the majority
   class on the imbalanced synthetic patches.  As in paragraph
   [0113] the anchor is always the *given* one-hot label, so corrections do not compound over
   rounds and a label can return to its given class.  ``g`` here is ``1 - p_given``.
5. **Rounds** (:func:`iter_train_refine`): one round = ``epochs_per_round`` epochs; it stops when
   the labels change less than ``label_tol`` (mean L1 change) and the validation loss less than
   ``loss_tol`` between rounds, or after ``max_rounds``.  With ``select_best`` (default) the
   returned model is the round with the best accuracy on the held-out samples' *given* labels:
   no clean labels are needed: with symmetric noise at rate ``r < (M - 1) / M``, accuracy on
   noisy labels is an increasing affine function of clean accuracy, and for other noise it is
   the best estimate available without a clean set.
6. **Flags** (:func:`flag_labels`): samples whose ``g`` stays high -- read as: the given class is
   not the most probable one of the predictions averaged over rounds (EMA) -- or whose refined
   label's argmax left the given class, and, optionally, any ``g`` above ``flag_threshold``;
   ranked most suspect first by ``rank_by`` (:func:`suspicion`), with given and suggested class and the confidence of
   the suggestion.
7. **Trusted labels** (set by a reviewer) are never refined and always have weight 1.

Imbalanced classes
------------------
Tumour is usually a few per cent of a slide's patches.  Trained as above, a network can settle
on "everything is Normal", and refinement then pulls the rare class's labels towards the
majority.  ``class_balance`` (default ``logit_adjust``) handles this without changing the
method's definition:

* **Loss.** ``logit_adjust`` (Menon et al. 2021) trains on ``logits + log prior``, ``prior`` being
  the share of each class among the training split's given labels, fixed for the run.  The
  offset logits model the given labels; the network's own logits then model balanced classes.
  ``g`` is computed from the offset logits, so it is still the gradient norm of the loss being
  minimised, and ``alpha`` and ``beta`` are computed from it as in steps 2 and 3.
  ``weights`` instead multiplies each sample's loss by ``c_y = N / (M n_y)``.
* **How the weights combine.** With class balance, ``alpha * beta`` is normalised to mean 1
  *within each given class* of a batch rather than over the batch (:func:`sample_weights`):
  the method's weights choose samples inside a class, never the share of a class in the loss
  (``docs/label-refinement.md`` shows what happened without it).
* **Refinement** (step 4) mixes each label with the round's *decision*: the balanced
  probabilities shifted by the per-class offsets chosen on the held-out labels (below), the
  same decision the saved model makes (``refine_toward``).  Refining towards the probabilities
  under the label prior instead turns a rare class's weakly predicted correct labels into the
  common class (on the realistic benchmark the refined labels kept 11-74 % of the tumour);
  towards the balanced probabilities, it turns the common class into the rare one.
* **Flags** compare predictions with the given labels, so they use the balanced probabilities
  multiplied back by the prior (:func:`with_prior`).
* **Model selection and the decision threshold.** A round is scored by its balanced accuracy
  on the held-out given labels, after choosing per-class logit offsets on those labels
  (:func:`fit_decision_bias`).  For two classes and class-dependent noise the balanced accuracy
  on noisy labels is an increasing affine function of the clean one, so the threshold that is
  best on noisy held-out labels is the best one for clean labels.  The selected round's offsets
  are folded into the output layer (:func:`fold_decision_bias`): the saved model predicts with
  them.
* **Collapse guard.** After every round, a class that the model predicts for fewer than 1 % of
  the training samples given it is "lost" (:func:`lost_classes`).  Such a round is not refined,
  not selected and not averaged into the flags' probabilities, and a warning says which class
  was lost; a run whose returned model is collapsed flags nothing (``RefineResult.collapsed``;
  ``train noisy`` exits with status 3).

Out-of-sample probabilities for flags
-------------------------------------
A network that has seen a sample in training partly memorises its label, so its own prediction
underestimates ``g`` for mislabelled samples.  With ``oos_folds >= 2`` the flags (and the
suggested labels) use cross-fitted probabilities: the data are split into ``oos_folds`` folds and
for each fold a model trained with this method on the other folds predicts it
(:func:`iter_cross_validated_probs`); this costs ``oos_folds`` extra trainings.  With
``oos_folds = 0`` (the GPU-friendly default for large patch sets) the flags use an EMA over rounds
of the training model's predictions, which the Gaussian weight keeps from memorising the noisy
samples in the first place (their ``g`` sits far from ``mu``, so their weight is small).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import CheckpointError, TrainingError
from pathviewer.core.progress import Progress, run_job
from pathviewer.core.ranking import RANKINGS, REGIONAL, Neighbours
from pathviewer.ml.device import pick_device
from pathviewer.ml.losses import soft_cross_entropy
from pathviewer.ml.refine_config import (  # noqa: F401 - re-exported: the engine's settings
    CLASS_BALANCE,
    LOST_CLASS_MIN_SAMPLES,
    LOST_CLASS_RECALL,
    REFINE_MODELS,
    REFINE_TOWARD,
    RefineConfig,
    demo_config,
)

ModelFactory = Callable[[], nn.Module]


# --------------------------------------------------------------------------- the method


def gradient_norm(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Step 1: per-sample gradient norm of CE w.r.t. the logits, ``g = 0.5 * ||p - y||_1``.

    Parameters
    ----------
    probs
        ``(N, M)`` softmax probabilities.
    targets
        ``(N, M)`` label distributions (one-hot or refined soft labels).

    Returns
    -------
    torch.Tensor
        ``(N,)`` values in [0, 1]; equals ``1 - p_y`` for a one-hot ``y``.
    """
    return (0.5 * (probs - targets).abs().sum(dim=-1)).clamp(0.0, 1.0)


def bin_index(g: torch.Tensor, bins: int) -> torch.Tensor:
    """Region of [0, 1] each ``g`` falls in (``g = 1`` belongs to the last region)."""
    return (g * bins).floor().long().clamp(0, bins - 1)


class GradientDensity:
    """Step 2: gradient density with region counts kept as an EMA over batches (GHM-C).

    Parameters
    ----------
    bins
        Number of equal regions of [0, 1].
    momentum
        EMA momentum of the counts; 0 uses each batch's own histogram.
    """

    def __init__(self, bins: int = 10, momentum: float = 0.75) -> None:
        self.bins = int(bins)
        self.momentum = float(momentum)
        self.counts: torch.Tensor | None = None

    def update(self, g: torch.Tensor) -> torch.Tensor:
        """Fold a batch's histogram into the EMA counts and return them (``(bins,)`` float)."""
        batch = torch.bincount(bin_index(g.detach(), self.bins), minlength=self.bins).to(
            torch.float64
        )
        if self.counts is None or self.momentum == 0:
            self.counts = batch
        else:
            self.counts = self.momentum * self.counts + (1 - self.momentum) * batch
        return self.counts

    def alpha(self, g: torch.Tensor) -> torch.Tensor:
        """``alpha_i = N / GD(g_i)`` with ``GD = count(region) * bins``, normalised to mean 1.

        Updates the EMA counts with this batch first.
        """
        if g.numel() == 0:
            return g.new_zeros(0)
        counts = self.update(g)
        per_sample = counts[bin_index(g.detach(), self.bins)].clamp_min(1e-6)
        alpha = g.numel() / (per_sample * self.bins)
        return (alpha / alpha.mean()).to(g.dtype)


#: Smallest sigma of the Gaussian weight: when nearly every g is equal, a tiny sigma would put the
#: whole weight of a batch on the one or two samples closest to ``mu``.
MIN_SIGMA = 0.05


def spread_around(g: torch.Tensor, centre: float) -> float | None:
    """The patent's sigma: ``sqrt(sum_i (g_i - centre)^2 / (N - 1))``; None for fewer than 2 values.

    Note the deviations are taken from the learning centre ``mu``, not from the mean of ``g``
    (paragraph [0105]): when most ``g`` lie far from ``mu`` (early in training, or with much
    label noise) the Gaussian widens instead of cutting those samples off.
    """
    if g.numel() < 2:
        return None
    g = g.detach().double()
    sigma = math.sqrt(float(((g - centre) ** 2).sum()) / (g.numel() - 1))
    return sigma if math.isfinite(sigma) else None


def gaussian_weights(g: torch.Tensor, mu: float, sigma: float | None = None) -> torch.Tensor:
    """Step 3: ``beta_i = exp(-(g_i - mu)^2 / (2 sigma^2))``.

    Parameters
    ----------
    g
        ``(N,)`` gradient norms.
    mu
        Gradient learning centre.
    sigma
        Spread; None: :func:`spread_around` ``mu`` of ``g`` itself.  Training passes the spread
        of ``g`` over the whole training set from the last prediction pass (the patent's ``N`` is
        the sample set, and a 32-sample batch gives a noisy estimate).  Floored at
        :data:`MIN_SIGMA`; a batch of one sample gets weight 1.
    """
    g = g.detach()
    if sigma is None:
        sigma = spread_around(g, mu)
        if sigma is None:
            return torch.ones_like(g)
    sigma = max(float(sigma), MIN_SIGMA)
    return torch.exp(-((g - mu) ** 2) / (2 * sigma**2))


def label_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among the given labels, floored so that its log stays finite."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(float)
    prior = np.maximum(counts / max(counts.sum(), 1.0), 1e-6)
    return prior / prior.sum()


def with_prior(probs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """Balanced-class probabilities turned into probabilities under the label prior.

    A model trained with class balance predicts ``p_bal(c | x)``, proportional to
    ``p(c | x) / prior_c``; the given labels follow ``p(c | x)``.  Refinement, ``g`` and the flags
    compare predictions with the given labels, so they use ``p_bal * prior`` renormalised (the
    post-hoc logit adjustment of Menon et al. 2021).  ``prior=None`` returns ``probs``.
    """
    if prior is None:
        return probs
    adjusted = np.asarray(probs, dtype=np.float64) * prior
    return adjusted / np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-12)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-class loss weights ``c_k = N / (M * n_k)`` of the given labels (1 for absent classes).

    Every class then contributes the same total weight to an epoch's loss, and the weights of the
    samples average to 1 over the data, so the learning rate keeps its meaning.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(float)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def sample_weights(
    g: torch.Tensor,
    trusted: torch.Tensor,
    density: GradientDensity | None,
    mu: float | None,
    sigma: float | None = None,
    class_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Steps 2, 3 and 7: per-sample loss weights ``c_y * alpha * beta``; trusted samples ``c_y``.

    ``alpha * beta`` is normalised to mean 1 over the batch's untrusted samples (the method's
    weights say which samples of a batch matter, not how large a step is); the class weight
    ``c_y`` (:func:`class_weights`) multiplies it afterwards and is not renormalised, so a batch
    rich in a rare class weighs more, as the class balance intends.

    Parameters
    ----------
    g
        ``(N,)`` gradient norms.
    trusted
        ``(N,)`` bool; trusted samples take no part in the histogram and weigh exactly 1.
    density
        The EMA gradient density (None: no alpha, i.e. alpha = 1).
    mu
        Gradient learning centre (None: no beta).
    sigma
        Standard deviation of the Gaussian (None: sample std of this batch's ``g``).
    class_weight
        ``(N,)`` class weight of each sample's label (for a soft label, the label's expected
        class weight); None: 1.
    groups
        ``(N,)`` given class of each sample: ``alpha * beta`` is then normalised to mean 1
        within each class instead of over the batch (used with class balance).
    """
    weights = torch.ones_like(g)
    free = ~trusted
    if not bool(free.any()):
        return weights if class_weight is None else weights * class_weight
    gf = g[free].detach()
    w = torch.ones_like(gf)
    if density is not None:
        w = w * density.alpha(gf)
    if mu is not None:
        w = w * gaussian_weights(gf, mu, sigma)
    if groups is None:
        w = _unit_mean(w)
    else:
        # Normalised within each class: the weights choose samples inside a class but leave
        # the share of each class in the loss as the class balance set it.
        gf_groups = groups[free]
        for c in torch.unique(gf_groups):
            members = gf_groups == c
            w[members] = _unit_mean(w[members])
    weights[free] = w
    return weights if class_weight is None else weights * class_weight


def _unit_mean(w: torch.Tensor) -> torch.Tensor:
    """``w`` scaled to mean 1; all ones when every weight underflowed to 0 (plain CE)."""
    mean = w.mean()
    return w / mean if float(mean) > 1e-12 else torch.ones_like(w)


def lost_classes(predicted: np.ndarray, given: np.ndarray, num_classes: int) -> list[int]:
    """Classes the model has stopped predicting: the collapse guard of the training loop.

    A class is lost when at least :data:`LOST_CLASS_MIN_SAMPLES` samples are given it and the
    model predicts it for fewer than :data:`LOST_CLASS_RECALL` of them.  Under label noise a
    healthy model disagrees with many given labels, but it still predicts every class it has
    learnt for a good part of the samples labelled so; a model that predicts (almost) one class
    for everything has learnt the class prior, and refining towards it would erase the others.

    Parameters
    ----------
    predicted
        ``(N,)`` predicted class indices.
    given
        ``(N,)`` given class indices.
    num_classes
        Number of classes.
    """
    predicted = np.asarray(predicted)
    given = np.asarray(given)
    lost = []
    for c in range(num_classes):
        members = given == c
        if int(members.sum()) < LOST_CLASS_MIN_SAMPLES:
            continue
        if float((predicted[members] == c).mean()) < LOST_CLASS_RECALL:
            lost.append(c)
    return lost


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels`` (nan when empty)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    present = np.unique(labels)
    if len(present) == 0:
        return float("nan")
    return float(np.mean([(predicted[labels == c] == c).mean() for c in present]))


def fit_decision_bias(log_probs: np.ndarray, labels: np.ndarray, passes: int = 2) -> np.ndarray:
    """Per-class logit offsets that maximise the balanced accuracy on the given labels.

    For two classes and label noise that depends on the class only, the balanced accuracy on
    the noisy labels is an increasing affine function of the balanced accuracy on clean labels
    (both read ``TPR - FPR``, scaled by how informative the labels are), so the offset that is
    best on held-out noisy labels is the best decision threshold for clean ones; no clean data
    is needed.  More classes are searched one coordinate at a time.

    Parameters
    ----------
    log_probs
        ``(N, M)`` log probabilities (or logits) of held-out samples.
    labels
        ``(N,)`` their given class indices.
    passes
        Coordinate-search passes for more than two classes.

    Returns
    -------
    numpy.ndarray
        ``(M,)`` offsets (class 0's is 0) to add to the logits; zeros when ``labels`` hold fewer
        than two classes.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    m = log_probs.shape[1]
    bias = np.zeros(m)
    if len(np.unique(labels)) < 2:
        return bias

    def score(b: np.ndarray) -> float:
        return balanced_accuracy((log_probs + b).argmax(1), labels)

    best = score(bias)
    for _ in range(passes if m > 2 else 1):
        for c in range(1, m):
            others = np.delete(log_probs + bias, c, axis=1).max(axis=1)
            # Offsets at which a sample changes sides, thinned to at most 512 candidates.
            margins = np.unique(others - log_probs[:, c])
            if len(margins) > 512:
                margins = np.quantile(margins, np.linspace(0, 1, 512))
            candidates = np.concatenate([[bias[c]], margins + 1e-6])
            for value in candidates:
                trial = bias.copy()
                trial[c] = value
                current = score(trial)
                # Ties keep the smaller change: an offset is a prior shift, not a free parameter.
                if current > best + 1e-12 or (
                    abs(current - best) <= 1e-12 and abs(value) < abs(bias[c])
                ):
                    best, bias = current, trial
    return bias


def fold_decision_bias(model: nn.Module, bias: np.ndarray) -> bool:
    """Add ``bias`` to the output layer's bias, so that ``model``'s argmax applies it.

    Returns False (and changes nothing) when the last ``nn.Linear`` has no bias or another size.
    """
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads or heads[-1].bias is None or heads[-1].out_features != len(bias):
        return False
    with torch.no_grad():
        heads[-1].bias.add_(torch.as_tensor(bias, dtype=heads[-1].bias.dtype))
    return True


def refinement_target(
    probs: np.ndarray, balanced: np.ndarray, bias: np.ndarray, toward: str
) -> torch.Tensor:
    """The predictions a class-balanced round refines its labels towards (``refine_toward``).

    Parameters
    ----------
    probs
        ``(N, M)`` probabilities under the label prior.
    balanced
        ``(N, M)`` the network's own (balanced) probabilities.
    bias
        ``(M,)`` decision offsets chosen on the held-out labels (:func:`fit_decision_bias`).
    toward
        ``decision`` (balanced shifted by ``bias``), ``label_prior`` or ``balanced``.
    """
    if toward == "label_prior":
        chosen = probs
    elif toward == "balanced":
        chosen = balanced
    else:
        logits = np.log(np.maximum(balanced, 1e-12)) + bias
        return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1)
    return torch.as_tensor(chosen, dtype=torch.float32)


def ranking_probs(
    probs: np.ndarray,
    given: np.ndarray,
    rank_by: str = "g",
    neighbours: Neighbours | None = None,
) -> np.ndarray:
    """The probabilities a review queue judges labels by (``(N, M)``, rows sum to 1).

    ``tempered`` divides the probabilities (which carry the given labels' class shares) by the
    square root of those shares: half-way to balanced classes.  Under the full shares a rare
    class's members labelled as the common class (missed tumour foci) are never the model's
    choice; without them, the common class's borderline labels crowd the queue.
    ``regional`` divides them by the shares themselves (class-balanced) and averages them over
    each patch's ``neighbours`` (:func:`smooth_over_neighbours`): annotation errors and tumour
    are regions, while the model's own mistakes are mostly single patches.  On the realistic
    benchmark it ranked real errors first more often than ``tempered`` under every noise model
    (docs/label-refinement.md).  Without ``neighbours`` it is the class-balanced probabilities
    alone.  The other rankings use ``probs`` as they are.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if rank_by not in ("tempered", REGIONAL) or len(given) == 0:
        return probs
    shares = np.maximum(np.bincount(given, minlength=probs.shape[1]) / len(given), 1.0 / len(given))
    divided = probs / (np.sqrt(shares) if rank_by == "tempered" else shares)
    divided = divided / divided.sum(axis=1, keepdims=True)
    if rank_by == REGIONAL and neighbours is not None:
        divided = smooth_over_neighbours(divided, neighbours)
    return np.asarray(divided)


#: Weight of a patch's own probabilities against each of its neighbours' in the ``regional``
#: order: with 8 neighbours the patch is a third of its neighbourhood.  The benchmark's
#: ranking was within 0.04 at @100 for weights 2 to 8 (docs/label-refinement.md).
REGIONAL_SELF_WEIGHT = 4.0


def smooth_over_neighbours(
    probs: np.ndarray, neighbours: Neighbours, self_weight: float = REGIONAL_SELF_WEIGHT
) -> np.ndarray:
    """Each row of ``probs`` averaged with its neighbours' rows (its own counting ``self_weight``).

    Parameters
    ----------
    probs
        ``(N, M)`` probabilities.
    neighbours
        Each sample's neighbouring patches (:func:`~pathviewer.core.ranking.patch_neighbours`).
    self_weight
        Weight of the sample's own row; each neighbour weighs 1.

    Raises
    ------
    TrainingError
        ``neighbours`` describes another number of samples.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(neighbours) != len(probs):
        raise TrainingError(f"{len(neighbours)} patch positions but {len(probs)} labels")
    owner = np.repeat(np.arange(len(probs)), np.diff(neighbours.indptr))
    total = self_weight * probs
    np.add.at(total, owner, probs[neighbours.indices])
    count = self_weight + np.diff(neighbours.indptr).astype(np.float64)
    return np.asarray(total / count[:, None])


def suspicion(
    probs: np.ndarray,
    given: np.ndarray,
    rank_by: str = "g",
    neighbours: Neighbours | None = None,
) -> np.ndarray:
    """Review-queue score of each label (higher: more likely wrong); see :data:`RANKINGS`.

    ``g`` is ``1 - p_given``.  ``class_normalised`` divides ``p_given`` by the class's mean
    ``p`` over the samples given that class (the per-class threshold of confident learning,
    Northcutt et al. 2021) before taking ``1 -``: with imbalanced classes a rare class's correct
    labels have lower probabilities than a common class's, and the plain ``g`` would fill the
    top of the queue with them.  ``regional`` is ``1 - p_given`` of :func:`ranking_probs`
    (class-balanced, averaged over each patch's neighbourhood).

    Parameters
    ----------
    probs
        ``(N, M)`` predicted probabilities.
    given
        ``(N,)`` given class indices.
    rank_by
        A key of :data:`RANKINGS`.
    neighbours
        Each sample's neighbouring patches (:func:`~pathviewer.core.ranking.patch_neighbours`),
        for the ``regional`` order.
    """
    given = np.asarray(given, dtype=np.int64)
    return _suspicion_of_ranking_probs(
        ranking_probs(probs, given, rank_by, neighbours), given, rank_by
    )


def _suspicion_of_ranking_probs(probs: np.ndarray, given: np.ndarray, rank_by: str) -> np.ndarray:
    """:func:`suspicion` of probabilities :func:`ranking_probs` already made for ``rank_by``."""
    if rank_by not in RANKINGS:
        raise TrainingError(f"unknown ranking {rank_by!r} (known: {', '.join(RANKINGS)})")
    p_given = probs[np.arange(len(given)), given]
    if rank_by in ("g", "tempered", REGIONAL):
        return 1.0 - p_given
    typical = np.ones(probs.shape[1])
    for c in np.unique(given):
        typical[c] = max(float(p_given[given == c].mean()), 1e-6)
    return 1.0 - p_given / typical[given]


def refine_labels(
    given: torch.Tensor, probs: torch.Tensor, gamma: float, trusted: torch.Tensor | None = None
) -> torch.Tensor:
    """Step 4: ``y' = (1 - g^gamma) * y_hot + g^gamma * p`` with ``g = 1 - p_given``.

    This is the valid reading of the patent's printed ``g^gamma * (p - y_hot)``, which is not a
    distribution; see the module docstring.  The result is a convex combination of two
    distributions, hence a distribution.  Trusted rows stay one-hot (step 7).

    Parameters
    ----------
    given
        ``(N, M)`` one-hot given labels.
    probs
        ``(N, M)`` predicted probabilities.
    gamma
        Strength exponent (small gamma: stronger correction of moderately wrong samples).
    trusted
        ``(N,)`` bool, optional.
    """
    g = gradient_norm(probs, given)
    mix = g.pow(gamma).unsqueeze(-1) if gamma > 0 else torch.ones_like(g).unsqueeze(-1)
    refined = (1 - mix) * given + mix * probs
    refined = refined.clamp_min(0)
    refined = refined / refined.sum(dim=-1, keepdim=True)
    if trusted is not None:
        refined[trusted] = given[trusted]
    return refined


@dataclass
class Flag:
    """One suspect label of the review list (step 6)."""

    index: int
    given: int
    suggested: int
    confidence: float
    g: float
    score: float = 0.0  #: the review-queue score (:func:`suspicion`); the queue is sorted by it


def flag_labels(
    given: np.ndarray,
    refined: np.ndarray,
    g: np.ndarray,
    threshold: float = 1.0,
    trusted: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    rank_by: str = "g",
    neighbours: Neighbours | None = None,
) -> list[Flag]:
    """Step 6: samples the model assigns to another class, or whose ``g`` exceeds ``threshold``.

    "``g`` stays high" is read relative to the other classes: a label is suspect when the
    model's most probable class is not the given one (``p_given < max_j p_j``, i.e. ``g`` above
    ``1 - max_other p``), or when the refined label's argmax moved away from the given label.
    Under label noise that leaves the true class the most frequent label of similar
    images, this is exactly the set of labels that disagree with the Bayes prediction.  A fixed
    threshold on ``g`` (0.5) flagged many correct labels, because a network trained on noisy
    labels is calibrated to them (at 40 % symmetric noise ``p`` of a correct label is about 0.6);
    ``threshold`` < 1 adds such samples for more recall.

    Parameters
    ----------
    given
        ``(N,)`` given class indices.
    refined
        ``(N, M)`` refined label distributions.
    g
        ``(N,)`` gradient norms (EMA over rounds, or out of sample).
    threshold
        Also flag when ``g > threshold`` (1: never).
    trusted
        ``(N,)`` bool; trusted samples are never flagged.
    probs
        ``(N, M)`` predicted probabilities behind ``g`` (EMA over rounds, or out of sample);
        None: ``refined`` stands in for them.
    rank_by
        The queue's order, a key of :data:`RANKINGS` (:func:`suspicion` of ``probs``).
    neighbours
        Each sample's neighbouring patches, for the ``regional`` order.

    Returns
    -------
    list of Flag
        Most suspect first: descending score, ties by index.  ``suggested`` is the refined
        argmax when it left the given class, else the most probable other class; ``confidence``
        is the predicted probability of ``suggested``.
    """
    given = np.asarray(given, dtype=np.int64)
    refined = np.asarray(refined, dtype=np.float64)
    model_probs = refined if probs is None else np.asarray(probs, dtype=np.float64)
    # The queue's own probabilities (tempered: a missed rare-class label can be the model's
    # choice only there) decide what is flagged and suggested as well as the order.
    probs = ranking_probs(model_probs, given, rank_by, neighbours)
    g = np.asarray(g, dtype=np.float64)
    rows = np.arange(len(given))
    refined_top = refined.argmax(axis=1)
    others = probs.copy()
    others[rows, given] = -np.inf
    other_top = others.argmax(axis=1) if probs.shape[1] > 1 else given
    mask = (g > threshold) | (refined_top != given) | (probs.argmax(axis=1) != given)
    if trusted is not None:
        mask &= ~np.asarray(trusted, dtype=bool)
    score = g if rank_by == "g" else _suspicion_of_ranking_probs(probs, given, rank_by)
    flags = []
    for i in np.flatnonzero(mask):
        suggested = int(refined_top[i]) if refined_top[i] != given[i] else int(other_top[i])
        flags.append(
            Flag(
                int(i),
                int(given[i]),
                suggested,
                float(probs[i, suggested]),
                float(g[i]),
                float(score[i]),
            )
        )
    flags.sort(key=lambda f: (-f.score, f.index))
    return flags


def flags_from_probs(
    labels: np.ndarray,
    probs: np.ndarray,
    config: RefineConfig,
    trusted: np.ndarray | None = None,
    neighbours: Neighbours | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Flag]]:
    """Steps 4 and 6 on given probabilities (e.g. out of sample): refined labels, ``g``, flags.

    Parameters
    ----------
    labels
        ``(N,)`` given class indices.
    probs
        ``(N, M)`` predicted probabilities.
    config
        Supplies ``gamma``, ``flag_threshold`` and ``rank_by``.
    trusted
        ``(N,)`` bool, optional.
    neighbours
        Each sample's neighbouring patches, for the ``regional`` order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    given = _one_hot(labels, probs.shape[1])
    trusted_t = None if trusted is None else torch.as_tensor(np.asarray(trusted, dtype=bool))
    refined = refine_labels(
        given, torch.as_tensor(probs, dtype=torch.float32), config.gamma, trusted_t
    ).numpy()
    g = gradient_norm(torch.as_tensor(probs, dtype=torch.float64), given.double()).numpy()
    flags = flag_labels(
        labels, refined, g, config.flag_threshold, trusted, probs, config.rank_by, neighbours
    )
    return refined, g, flags


# --------------------------------------------------------------------------- training


@dataclass
class RefineResult:
    """What a run returns.

    Attributes
    ----------
    refined
        ``(N, M)`` refined labels.
    probs
        ``(N, M)`` probabilities behind the flags: each sample's predictions averaged over the
        rounds (EMA ``g_ema``), or out of sample when ``oos_folds >= 2``.
    g
        ``(N,)`` g used for the flags.
    flags
        Ranked suspect labels.
    rounds
        Rounds trained.
    history
        One metrics dict per round.
    model
        The trained network (CPU, eval mode): the selected round's with ``select_best``, else the
        last round's.
    selected_round
        1-based round whose weights ``model`` holds.
    last_state
        ``state_dict`` of the last round (equal to the model's without ``select_best``).
    collapsed
        The returned model predicts (almost) none of some class (:func:`lost_classes`); its
        flags are withheld.
    collapsed_rounds
        Rounds in which the collapse guard fired.
    lost_classes
        Names of the classes the returned model lost (empty unless ``collapsed``).
    decision_bias
        ``(M,)`` logit offsets folded into ``model``'s output layer (None: none were).
    """

    refined: np.ndarray
    probs: np.ndarray
    g: np.ndarray
    flags: list[Flag]
    rounds: int
    history: list[dict[str, float]]
    model: nn.Module
    selected_round: int = 0
    last_state: dict[str, torch.Tensor] | None = None
    collapsed: bool = False
    collapsed_rounds: int = 0
    lost_classes: list[str] = field(default_factory=list)
    decision_bias: np.ndarray | None = None


class _Indexed(Dataset):
    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = self.indices[item]
        return torch.as_tensor(self.base[index]), index


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 90-degree rotation of a batch (tissue has no orientation)."""
    # Only square image batches: feature vectors (and non-square crops) have no orientation.
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        return images
    k = int(torch.randint(0, 4, (1,), generator=generator))
    images = torch.rot90(images, k, dims=(-2, -1))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        images = images.flip(-1)
    return images


def _predict(
    model: nn.Module, dataset: Dataset, indices: Sequence[int], device: torch.device, batch: int
) -> np.ndarray:
    """Softmax probabilities ``(len(indices), M)`` in eval mode."""
    model.eval()
    loader = DataLoader(_Indexed(dataset, indices), batch_size=batch, shuffle=False)
    out: list[np.ndarray] = []
    with torch.no_grad():
        for images, _ in loader:
            logits = model(images.to(device).float())
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    eye = torch.eye(num_classes, dtype=torch.float32)
    return eye[torch.as_tensor(labels, dtype=torch.long)]


def _split_val(n: int, fraction: float, labels: np.ndarray, seed: int) -> np.ndarray:
    """Boolean validation mask, stratified by given label (at least one sample per split)."""
    rng = np.random.default_rng(seed + 7919)
    val = np.zeros(n, bool)
    if fraction <= 0 or n < 4:
        return val
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        k = int(round(len(members) * fraction))
        if k >= len(members):
            k = len(members) - 1
        val[members[:k]] = True
    return val


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a cancel or crash keeps the previous one)."""
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by this module (``weights_only=True``).

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state or "method" not in state:
        raise CheckpointError(f"{path}: not a label-refinement checkpoint")
    if state["method"] != "noisy-refine":
        raise CheckpointError(f"{path}: a {state['method']!r} checkpoint, not noisy-refine")
    return state


def iter_train_refine(
    dataset: Dataset,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    model_factory: ModelFactory,
    config: RefineConfig | None = None,
    trusted: Sequence[bool] | np.ndarray | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    classes: Sequence[str] | None = None,
    compute_flags: bool = True,
    groups: Sequence[Any] | np.ndarray | None = None,
    neighbours: Neighbours | None = None,
) -> Generator[Progress, None, RefineResult]:
    """Train a classifier on noisy labels with the weighted loss and iterative refinement.

    A job generator (see :mod:`pathviewer.core.progress`): it yields a ``Progress`` per batch
    group and one per round with metrics ``loss``, ``val_loss``, ``val_accuracy`` (against the
    given labels of the held-out samples), ``changed`` (fraction of samples whose refined argmax
    differs from the given label), ``label_delta`` and ``round``; it returns a
    :class:`RefineResult`.

    Parameters
    ----------
    dataset
        ``dataset[i]`` is sample ``i``'s image as a float tensor/array in [0, 1].
    labels
        ``(N,)`` given class indices.
    num_classes
        ``M >= 2``.
    model_factory
        Builds a fresh network mapping images to ``(B, M)`` logits.
    config
        Settings (defaults: :class:`RefineConfig`).
    trusted
        ``(N,)`` bool: labels confirmed by a reviewer.
    out_dir
        When given: ``model.pt`` (after every round, atomically), ``config.json`` and
        ``metrics.jsonl`` (one line per round) are written there.
    resume
        Continue from ``out_dir/model.pt``.
    classes
        Class names stored in the checkpoint.
    compute_flags
        Compute flags (and out-of-sample probabilities when ``config.oos_folds >= 2``).
    groups
        ``(N,)`` group of each sample, e.g. its slide: out-of-sample folds keep a group together
        (:func:`group_folds`).
    neighbours
        Each sample's neighbouring patches on its slide
        (:func:`~pathviewer.core.ranking.patch_neighbours`), for the ``regional`` order.

    Raises
    ------
    TrainingError
        Fewer than two classes, a label out of range, bad settings, ``neighbours`` of another
        number of samples, or a non-finite loss (the message names the round and batch; the
        last good checkpoint is kept).
    """
    config = config or RefineConfig()
    config.validate()
    labels_np = np.asarray(labels, dtype=np.int64)
    n = len(labels_np)
    if n == 0:
        raise TrainingError("no labelled samples to train on")
    if len(dataset) != n:  # type: ignore[arg-type]
        raise TrainingError(f"{len(dataset)} images but {n} labels")  # type: ignore[arg-type]
    if neighbours is not None and len(neighbours) != n:
        raise TrainingError(f"{len(neighbours)} patch positions but {n} labels")
    if num_classes < 2:
        raise TrainingError("label refinement needs at least two classes")
    if labels_np.min() < 0 or labels_np.max() >= num_classes:
        raise TrainingError(f"labels must be class indices in [0, {num_classes - 1}]")
    if len(np.unique(labels_np)) < 2:
        raise TrainingError("all labels are the same class; need at least two classes")
    trusted_np = np.zeros(n, bool) if trusted is None else np.asarray(trusted, dtype=bool)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)

    model = model_factory().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    given = _one_hot(labels_np, num_classes)
    soft = given.clone()
    trusted_t = torch.as_tensor(trusted_np)
    # EMA over rounds of every sample's predicted probabilities (the flags' "g stays high").
    p_avg = np.full((n, num_classes), 1.0 / num_classes)
    val_mask = _split_val(n, config.val_fraction, labels_np, config.seed)
    train_idx = np.flatnonzero(~val_mask)
    val_idx = np.flatnonzero(val_mask)
    history: list[dict[str, float]] = []
    start_round = 0
    # Model selection (select_best, step 5 of the module docstring): the round with the best
    # accuracy on the held-out samples' given labels; no clean data is needed.
    best_val_score, best_round = -math.inf, -1
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint: dict[str, Any] = {}  # the last one written, rewritten once the run ends
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "model.pt" if out is not None else None
    if resume:
        if ckpt_path is None:
            raise TrainingError("resume needs an output folder with model.pt")
        state = load_checkpoint(ckpt_path)
        if int(state.get("num_samples", -1)) != n or int(state["num_classes"]) != num_classes:
            raise CheckpointError(f"{ckpt_path}: made for a different label set; cannot resume")
        # A finished run's state_dict is the selected round; training continues from the last one.
        model.load_state_dict(state.get("resume_state_dict", state["state_dict"]))
        if "best_round" in state:
            best_round = int(state["best_round"])
            best_val_score = float(state["best_val_accuracy"])
            best_bias = np.asarray(state.get("best_bias", np.zeros(num_classes)), dtype=float)
            best_state = state.get("best_state_dict", state["state_dict"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        soft = state["labels"].float()
        if "p_avg" in state:
            p_avg = state["p_avg"].double().numpy()
        else:  # a checkpoint from before p_avg: the given class keeps 1 - g, the rest shares g
            g_old = state["g_avg"].double().numpy()[:, None]
            p_avg = g_old / max(num_classes - 1, 1) * (1 - given.double().numpy())
            p_avg += (1 - g_old) * given.double().numpy()
        start_round = int(state["round"]) + 1
        history = [dict(h) for h in state.get("history", [])]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.json") as handle:
            json.dump({**config.to_dict(), "classes": list(classes or [])}, handle, indent=2)
        if not resume:
            with atomic_write(out / "metrics.jsonl") as handle:
                handle.write("")

    # Class balance (module docstring): the training split's label prior, fixed for the run.
    prior = (
        label_prior(labels_np[train_idx], num_classes) if config.class_balance != "none" else None
    )
    balance = (
        class_weights(labels_np[train_idx], num_classes).to(device)
        if config.class_balance == "weights"
        else None
    )
    log_prior = (
        torch.as_tensor(np.log(prior), dtype=torch.float32, device=device)
        if prior is not None and config.class_balance == "logit_adjust"
        else None
    )
    names = list(classes or []) or [str(c) for c in range(num_classes)]
    given_t = torch.as_tensor(labels_np)
    best_bias = last_bias = np.zeros(num_classes)
    collapsed_rounds = 0
    last_lost: list[int] = []
    density = GradientDensity(config.bins, config.momentum) if config.use_ghm else None
    mu = config.mu if config.use_gaussian else None
    loader = DataLoader(
        _Indexed(dataset, train_idx.tolist()),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(train_idx) > config.batch_size,
        num_workers=config.num_workers,
        generator=generator,
    )
    batches = len(loader) * config.epochs_per_round
    prev_val_loss = math.inf
    sigma: float | None = None
    prev_soft = soft.clone()
    probs = np.full((n, num_classes), 1.0 / num_classes)
    rounds_done = start_round
    for round_no in range(start_round, config.max_rounds):
        # ---- train one round with the weighted loss (steps 1-3, 7).  With refinement on, the
        # warm-up is plain CE: early in training every g sits near 1 - 1/M, so the Gaussian would
        # pick a handful of samples at random and the density weight up-weights exactly the
        # samples the network has not learnt yet -- which, with noisy labels, are the wrong ones
        # (measured on digits with 40% noise: 0.52 test accuracy with alpha in the warm-up, 0.92
        # without).  Networks learn the clean majority first (early learning), so the warm-up's
        # predictions give g a meaning; the weights start with the first refinement.
        weighted = round_no >= config.warmup or not config.refine
        mu_now = mu if weighted and round_no >= config.warmup else None
        density_now = density if weighted else None
        model.train()
        total_loss, seen, step = 0.0, 0, 0
        for _epoch in range(config.epochs_per_round):
            for images, index in loader:
                images = images.to(device).float()
                if config.augment:
                    images = _augment(images, generator)
                targets = soft[index].to(device)
                logits = model(images).float()
                if log_prior is not None:
                    # The loss sees the logits offset by the log prior: the network's own
                    # logits then model balanced classes, and g below is still the gradient
                    # norm of the loss being minimised.
                    logits = logits + log_prior
                p = torch.softmax(logits, dim=-1)
                g = gradient_norm(p.detach(), targets)  # step 1
                weights = sample_weights(  # steps 2, 3 and 7, and the class balance
                    g,
                    trusted_t[index].to(device),
                    density_now,
                    mu_now,
                    sigma,
                    None if balance is None else targets @ balance,
                    None if prior is None else given_t[index].to(device),
                )
                loss = (weights * soft_cross_entropy(logits, targets)).mean()
                if not torch.isfinite(loss):
                    kept = f"; last good checkpoint kept: {ckpt_path}" if ckpt_path else ""
                    if ckpt_path is not None and not ckpt_path.exists():
                        kept = "; no checkpoint was written yet"
                    raise TrainingError(
                        f"loss became {float(loss.detach())} in round {round_no + 1}, batch {step + 1} "
                        f"(check the images for NaN values or lower the learning rate){kept}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(index)
                seen += len(index)
                step += 1
                if step % 10 == 0 or step == batches:
                    yield Progress(
                        "training",
                        round_no * batches + step,
                        config.max_rounds * batches,
                        f"round {round_no + 1}",
                        {"batch_loss": float(loss.detach())},
                    )
        # ---- predictions of every sample; validation loss against the given labels
        balanced_probs = _predict(model, dataset, range(n), device, config.batch_size * 2)
        # Predictions under the label prior: what refinement, g and the flags compare with the
        # given labels (identical to the network's probabilities without class balance).
        probs = with_prior(balanced_probs, prior)
        probs_t = torch.as_tensor(probs, dtype=torch.float32)
        eps = 1e-7
        if len(val_idx):
            pv = probs[val_idx]
            val_loss = float(-np.log(pv[np.arange(len(val_idx)), labels_np[val_idx]] + eps).mean())
            val_acc = float((pv.argmax(1) == labels_np[val_idx]).mean())
            # With class balance the decision threshold is chosen on the held-out given labels
            # (fit_decision_bias); the round is then scored with it.
            val_log = np.log(np.maximum(balanced_probs[val_idx], 1e-12))
            bias = (
                fit_decision_bias(val_log, labels_np[val_idx])
                if prior is not None
                else np.zeros(num_classes)
            )
            val_bal = balanced_accuracy((val_log + bias).argmax(1), labels_np[val_idx])
        else:
            val_loss, val_acc, val_bal = float("nan"), float("nan"), float("nan")
            bias = np.zeros(num_classes)
        # Model selection reads the balanced accuracy when classes are balanced: on imbalanced
        # labels plain accuracy is highest for the model that predicts the majority class.
        val_score = val_bal if prior is not None else val_acc
        # ---- the collapse guard: a model that stopped predicting a class is not refined towards
        # (the labels keep their last state) and cannot be the selected round.
        # Judged on the predictions refinement uses: a class they never predict would be
        # refined away.
        toward = probs_t
        if prior is not None:
            toward = refinement_target(probs, balanced_probs, bias, config.refine_toward)
        lost = lost_classes(toward[train_idx].argmax(1).numpy(), labels_np[train_idx], num_classes)
        if lost:
            collapsed_rounds += 1
            lost_names = ", ".join(names[c] for c in lost)
            yield Progress(
                "warning",
                (round_no + 1) * batches,
                config.max_rounds * batches,
                f"round {round_no + 1}: the model predicts almost no {lost_names} "
                f"(it has collapsed towards the other classes); its labels are not refined "
                f"and the round is not selected",
            )
        last_lost = lost
        # "g stays high": EMA over the rounds after the warm-up (warm-up predictions are immature);
        # a collapsed round's predictions are left out of it.
        if round_no <= config.warmup and not lost:
            p_avg = probs.astype(np.float64)
        elif not lost:
            p_avg = config.g_ema * p_avg + (1 - config.g_ema) * probs
        # ---- step 4: refine after the warm-up
        if config.refine and round_no + 1 > config.warmup and not lost:
            soft = refine_labels(given, toward, config.gamma, trusted_t)
        # sigma of the next round's Gaussian: spread around mu of the training set's g w.r.t.
        # its labels (paragraph [0105]).
        sigma = spread_around(gradient_norm(probs_t[train_idx], soft[train_idx]), config.mu)
        delta = float((soft - prev_soft).abs().sum(dim=-1).mean())
        prev_soft = soft.clone()
        changed = float((soft.argmax(-1).numpy() != labels_np).mean())
        metrics = {
            "round": float(round_no + 1),
            "loss": total_loss / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "val_balanced_accuracy": val_bal,
            "collapsed": float(bool(lost)),
            "changed": changed,
            "label_delta": delta,
        }
        history.append(metrics)
        rounds_done = round_no + 1
        current = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if (
            config.select_best
            and not lost
            and math.isfinite(val_score)
            and val_score > best_val_score
        ):
            best_val_score, best_round, best_state = val_score, round_no, current
            best_bias = bias
        last_bias = bias
        if out is not None and ckpt_path is not None:
            selection: dict[str, Any] = {}
            if best_state is not None:
                selection = {
                    "best_round": best_round,
                    "best_val_accuracy": best_val_score,
                    "best_bias": [float(v) for v in best_bias],
                }
                if best_round != round_no:
                    selection["best_state_dict"] = best_state
            checkpoint = {
                **selection,
                "method": "noisy-refine",
                "state_dict": current,
                "optimizer": optimizer.state_dict(),
                "config": config.to_dict(),
                "classes": list(classes or []),
                "num_classes": num_classes,
                "num_samples": n,
                "round": round_no,
                "labels": soft.clone(),
                "p_avg": torch.as_tensor(p_avg),
                "history": history,
            }
            save_checkpoint(ckpt_path, checkpoint)
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
        yield Progress(
            "training",
            (round_no + 1) * batches,
            config.max_rounds * batches,
            f"round {round_no + 1}: val loss {val_loss:.4f}, {changed:.1%} labels changed",
            metrics,
        )
        # ---- step 5: stop when labels and validation loss no longer change
        refining = config.refine and round_no + 1 > config.warmup + 1
        if (
            refining
            and delta < config.label_tol
            and abs(prev_val_loss - val_loss) < config.loss_tol
        ):
            break
        prev_val_loss = val_loss

    model = model.cpu().eval()
    last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    selected_round = rounds_done
    final_bias = last_bias
    if best_state is not None:
        model.load_state_dict(best_state)
        selected_round = best_round + 1
        final_bias = best_bias
    # The decision threshold chosen on the held-out labels becomes part of the returned model.
    folded = (
        prior is not None and bool(np.any(final_bias)) and fold_decision_bias(model, final_bias)
    )
    if ckpt_path is not None and checkpoint and (folded or selected_round != rounds_done):
        # The finished run's model.pt holds the selected model; training resumes from the last.
        checkpoint.pop("best_state_dict", None)
        checkpoint.update(
            {
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "resume_state_dict": last_state,
                "decision_bias": [float(v) for v in final_bias] if folded else None,
            }
        )
        save_checkpoint(ckpt_path, checkpoint)
    # The returned model is collapsed when no round escaped collapse (or, without selection,
    # the last one did not): its flags would ask the annotator to erase the lost classes.
    collapsed = bool(last_lost) and (best_state is None or not config.select_best)
    if collapsed and ckpt_path is not None and checkpoint:
        checkpoint["collapsed"] = [names[c] for c in last_lost]
        save_checkpoint(ckpt_path, checkpoint)
    if collapsed:
        yield Progress(
            "warning",
            rounds_done,
            rounds_done,
            "the model collapsed: it predicts almost no "
            + ", ".join(names[c] for c in last_lost)
            + "; no labels are flagged. Check the labels of that class, or train longer "
            "or with more samples of it",
        )
    refined_np = soft.numpy().astype(np.float64)
    flag_probs = p_avg
    flag_g = 1 - p_avg[np.arange(n), labels_np]
    flags: list[Flag] = []
    if compute_flags and not collapsed and config.oos_folds >= 2:
        flag_probs = yield from iter_cross_validated_probs(
            dataset, labels_np, num_classes, model_factory, config, trusted_np, groups
        )
        _, flag_g, flags = flags_from_probs(labels_np, flag_probs, config, trusted_np, neighbours)
    elif compute_flags and not collapsed:
        flags = flag_labels(
            labels_np,
            refined_np,
            flag_g,
            config.flag_threshold,
            trusted_np,
            flag_probs,
            config.rank_by,
            neighbours,
        )
    return RefineResult(
        refined_np,
        flag_probs,
        flag_g,
        flags,
        rounds_done,
        history,
        model,
        selected_round,
        last_state,
        collapsed,
        collapsed_rounds,
        [names[c] for c in last_lost] if collapsed else [],
        np.asarray(final_bias, dtype=np.float64) if folded else None,
    )


def group_folds(
    labels: np.ndarray, k: int, seed: int, groups: Sequence[Any] | np.ndarray | None = None
) -> np.ndarray:
    """Fold number of each sample for ``k``-fold cross-fitting.

    Without ``groups``: stratified by label.  With ``groups`` (e.g. each patch's slide) a group
    never spans two folds: annotator errors are spatial (a missed focus, a loose outline), and a
    model that trained on the neighbours of a wrong label has learnt that slide's mistake.
    Groups are dealt, largest first, to the fold with the fewest samples; with fewer groups than
    folds the split falls back to stratified.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    rng = np.random.default_rng(seed)
    fold = np.zeros(n, np.int64)
    if groups is not None:
        keys = np.asarray([str(g) for g in groups])
        names, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        if len(names) >= k:
            order = rng.permutation(len(names))
            order = order[np.argsort(-counts[order], kind="stable")]
            sizes = np.zeros(k, np.int64)
            assigned = np.zeros(len(names), np.int64)
            for g in order:
                target = int(np.argmin(sizes))
                assigned[g] = target
                sizes[target] += counts[g]
            return assigned[inverse]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        fold[members] = np.arange(len(members)) % k
    return fold


def iter_cross_validated_probs(
    dataset: Dataset,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    model_factory: ModelFactory,
    config: RefineConfig,
    trusted: Sequence[bool] | np.ndarray | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    balanced_out: np.ndarray | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Out-of-sample probabilities: ``oos_folds`` models, each predicting its held-out fold.

    Each fold's model is trained with the full method (:func:`iter_train_refine`) on the other
    folds.  Folds are stratified by given label, or, with ``groups``, made of whole groups
    (:func:`group_folds`).  Returns ``(N, M)`` probabilities under the label prior (the decision
    offsets of the fold models are taken back out).  ``balanced_out``, an ``(N, M)`` array,
    receives the same probabilities before the prior is applied (benchmarks compare queues).
    """
    from torch.utils.data import Subset

    labels_np = np.asarray(labels, dtype=np.int64)
    n = len(labels_np)
    trusted_np = np.zeros(n, bool) if trusted is None else np.asarray(trusted, dtype=bool)
    k = max(2, config.oos_folds)
    fold = group_folds(labels_np, k, config.seed + 104729, groups)
    probs = np.zeros((n, num_classes), np.float64)
    device = pick_device(config.device)
    for f in range(k):
        train = np.flatnonzero(fold != f)
        test = np.flatnonzero(fold == f)
        if len(np.unique(labels_np[train])) < 2:
            raise TrainingError("too few samples per class for out-of-sample folds")
        # The fold models estimate how likely each *given* label is, so their labels are refined
        # under the given labels' class shares: refined towards the decision, their probabilities
        # drift from those shares and the queue's top loses precision (docs/label-refinement.md).
        sub_config = RefineConfig.from_dict(
            {**config.to_dict(), "seed": config.seed + f + 1, "refine_toward": "label_prior"}
        )
        job = iter_train_refine(
            Subset(dataset, train.tolist()),
            labels_np[train],
            num_classes,
            model_factory,
            sub_config,
            trusted_np[train],
            compute_flags=False,
        )
        result = yield from _relabel(job, f"out-of-sample fold {f + 1}/{k}")
        model = result.model.to(device)
        fold_probs = _predict(model, dataset, test.tolist(), device, config.batch_size * 2)
        if result.decision_bias is not None:
            # The fold model predicts with its decision offsets; the flags need probabilities.
            fold_probs = fold_probs * np.exp(-result.decision_bias)
            fold_probs /= fold_probs.sum(axis=1, keepdims=True)
        prior = (
            label_prior(labels_np[train], num_classes) if config.class_balance != "none" else None
        )
        probs[test] = with_prior(fold_probs, prior)
        if balanced_out is not None:
            balanced_out[test] = fold_probs
    return probs


def _relabel(
    job: Generator[Progress, None, RefineResult], stage: str
) -> Generator[Progress, None, RefineResult]:
    """Re-yield ``job``'s events under another stage name and return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(stage, event.done, event.total, event.message, event.metrics)


def train_refine(*args: Any, **kwargs: Any) -> RefineResult:
    """Blocking form of :func:`iter_train_refine` (same parameters)."""
    return run_job(iter_train_refine(*args, **kwargs))
