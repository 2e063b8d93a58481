"""Label-refinement engine: weights, refinement, flags, training loop, checkpoints."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

from pathviewer.core.errors import TrainingError
from pathviewer.core.label_noise import symmetric_flips
from pathviewer.core.progress import run_job
from pathviewer.core.ranking import patch_neighbours
from pathviewer.ml.patch_data import ArrayDataset
from pathviewer.ml.refine import (
    GradientDensity,
    RefineConfig,
    balanced_accuracy,
    demo_config,
    fit_decision_bias,
    flag_labels,
    fold_decision_bias,
    gaussian_weights,
    gradient_norm,
    group_folds,
    iter_train_refine,
    label_prior,
    load_checkpoint,
    lost_classes,
    ranking_probs,
    refine_labels,
    sample_weights,
    suspicion,
    train_refine,
    with_prior,
)
from pathviewer.ml.small_cnn import SmallCNN
from pathviewer.ml.stain_classifier import FeatureDataset, StainFeatureClassifier

torch.set_num_threads(1)


def test_gradient_norm_is_one_minus_p_of_label() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = torch.eye(3)[torch.tensor([0, 1])]
    assert torch.allclose(gradient_norm(probs, y), torch.tensor([0.3, 0.9]))
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    assert torch.allclose(gradient_norm(probs[:1], soft), torch.tensor([0.5 * (0.2 + 0.3 + 0.1)]))


def test_alpha_matches_hand_computed_histogram() -> None:
    # Bins of width 0.1: three samples in region 0, one in region 9.  GD = count * bins, so
    # GD = 30, 30, 30, 10 and alpha = N / GD = 4/30 (x3), 4/10; mean 0.2 -> normalised 2/3, 2.
    density = GradientDensity(bins=10, momentum=0.0)
    alpha = density.alpha(torch.tensor([0.05, 0.02, 0.09, 0.95]))
    assert torch.allclose(alpha, torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0]), atol=1e-6)
    assert density.counts is not None
    assert density.counts[0] == 3 and density.counts[9] == 1 and density.counts.sum() == 4
    # g = 1.0 belongs to the last region, not an 11th one.
    density.alpha(torch.tensor([1.0, 0.0]))
    assert density.counts[9] == 1 and density.counts[0] == 1


def test_density_counts_are_an_ema_over_batches() -> None:
    density = GradientDensity(bins=4, momentum=0.75)
    first = density.update(torch.tensor([0.1, 0.1, 0.6, 0.9])).clone()
    assert first.tolist() == [2, 0, 1, 1]  # the first batch initialises the counts
    second = density.update(torch.tensor([0.3, 0.3, 0.3, 0.3]))
    expected = 0.75 * torch.tensor([2.0, 0, 1, 1]) + 0.25 * torch.tensor([0.0, 4, 0, 0])
    assert torch.allclose(second, expected.double())
    # alpha folds its own batch in first: counts [2, 0, 1, 1] -> 0.75 * that + 0.25 * [1, 1, 0, 0].
    alpha = GradientDensity(bins=4, momentum=0.75)
    alpha.update(torch.tensor([0.1, 0.1, 0.6, 0.9]))
    a = alpha.alpha(torch.tensor([0.1, 0.3]))
    raw = torch.tensor([2 / (1.75 * 4), 2 / (0.25 * 4)])
    assert torch.allclose(a, (raw / raw.mean()).float())


def test_gaussian_weight_formula() -> None:
    g = torch.tensor([0.1, 0.3, 0.5, 0.9])
    # Paragraph [0105]: sigma is the spread of g around mu (not around the mean of g).
    sigma = math.sqrt(((0.1 - 0.3) ** 2 + 0 + (0.5 - 0.3) ** 2 + (0.9 - 0.3) ** 2) / 3)
    assert sigma != pytest.approx(float(np.std([0.1, 0.3, 0.5, 0.9], ddof=1)))
    beta = gaussian_weights(g, mu=0.3)
    expected = torch.exp(-((g - 0.3) ** 2) / (2 * sigma**2))
    assert torch.allclose(beta, expected)
    assert beta.argmax() == 1  # the sample at the learning centre weighs most
    assert torch.allclose(gaussian_weights(g, 0.0, sigma=0.2), torch.exp(-(g**2) / (2 * 0.04)))
    assert torch.equal(gaussian_weights(torch.tensor([0.4]), 0.3), torch.ones(1))


def test_weights_have_mean_one_and_trusted_weigh_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = torch.as_tensor(rng.random(32), dtype=torch.float32)
        trusted = torch.as_tensor(rng.random(32) < 0.25)
        w = sample_weights(g, trusted, GradientDensity(10, 0.75), mu=0.3)
        assert torch.all(w[trusted] == 1.0)
        assert math.isclose(float(w[~trusted].mean()), 1.0, rel_tol=1e-5)
        assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-5)
        assert torch.all(w >= 0)


def test_refined_labels_are_distributions() -> None:
    rng = np.random.default_rng(1)
    for gamma in (0.0, 0.3, 1.0, 2.0, 7.0):
        for k in (2, 3, 10):
            probs = torch.softmax(torch.as_tensor(rng.normal(0, 3, (64, k))), -1).float()
            given = torch.eye(k)[torch.as_tensor(rng.integers(0, k, 64))]
            refined = refine_labels(given, probs, gamma)
            assert torch.all(refined >= 0)
            assert torch.allclose(refined.sum(-1), torch.ones(64), atol=1e-5)
            # Convex combination: lies between the given label and the prediction.
            g = (1 - (probs * given).sum(-1)).pow(gamma) if gamma > 0 else torch.ones(64)
            expected = (1 - g[:, None]) * given + g[:, None] * probs
            assert torch.allclose(refined, expected, atol=1e-5)


def test_refinement_leaves_confident_and_trusted_labels_alone() -> None:
    given = torch.eye(3)[torch.tensor([0, 1, 2])]
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.05, 0.05], [0.0, 0.9, 0.1]])
    trusted = torch.tensor([False, False, True])
    refined = refine_labels(given, probs, 1.0, trusted)
    assert torch.allclose(refined[0], given[0])  # g = 0: no correction
    assert refined[1].argmax() == 0  # g = 0.95: pulled to the prediction
    assert torch.equal(refined[2], given[2])  # trusted: never refined


def test_flags_are_ranked_most_suspect_first() -> None:
    given = np.array([0, 1, 2, 0, 1])
    refined = np.array(
        [
            [0.9, 0.05, 0.05],  # agrees, low g: not flagged
            [0.7, 0.2, 0.1],  # argmax differs
            [0.1, 0.3, 0.6],  # agrees but g high
            [0.2, 0.7, 0.1],  # argmax differs, trusted -> not flagged
            [0.05, 0.9, 0.05],
        ]
    )
    g = np.array([0.1, 0.6, 0.8, 0.9, 0.05])
    flags = flag_labels(given, refined, g, 0.5, trusted=np.array([0, 0, 0, 1, 0], bool))
    assert [f.index for f in flags] == [2, 1]
    assert flags[0].suggested == 1 and math.isclose(flags[0].confidence, 0.3)
    assert flags[1].suggested == 0 and flags[1].given == 1 and math.isclose(flags[1].g, 0.6)


def test_flags_follow_the_predicted_class_by_default() -> None:
    given = np.array([0, 0, 1, 2])
    refined = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8]], dtype=float
    )
    probs = np.array(
        [
            [0.45, 0.3, 0.25],  # g 0.55 but still the most probable class: a correct label
            [0.35, 0.6, 0.05],  # refinement has not moved it yet, the predictions have
            [0.3, 0.5, 0.2],
            [0.7, 0.1, 0.2],  # the model puts it in class 0
        ]
    )
    g = 1 - probs[np.arange(4), given]
    flags = flag_labels(given, refined, g, probs=probs)
    assert [f.index for f in flags] == [3, 1]
    assert (flags[0].suggested, flags[1].suggested) == (0, 1)
    assert math.isclose(flags[0].confidence, 0.7) and math.isclose(flags[1].confidence, 0.6)
    # A threshold below 1 adds high-g samples that the model still assigns to their given class.
    assert [f.index for f in flag_labels(given, refined, g, 0.5, probs=probs)] == [3, 1, 0]


def test_config_metadata_and_validation() -> None:
    for f in fields(RefineConfig):
        assert f.metadata.get("help"), f.name
    demo_config().validate()
    with pytest.raises(TrainingError, match="momentum"):
        RefineConfig(momentum=1.5).validate()
    assert RefineConfig.from_dict({**RefineConfig().to_dict(), "junk": 1}) == RefineConfig()


def _digits(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:n] / 16.0).astype(np.float32)[:, None]
    y = digits.target[:n]
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    flip = rng.random(n) < noise
    noisy[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    return x, y, noisy


def test_digits_flags_catch_injected_noise() -> None:
    x, clean, noisy = _digits(700, 0.3, seed=5)
    flipped = noisy != clean
    config = RefineConfig(
        max_rounds=14, warmup=4, batch_size=32, lr=3e-3, device="cpu", augment=False
    )
    events = []
    result = run_job(
        iter_train_refine(ArrayDataset(x), noisy, 10, lambda: SmallCNN(10, 1, 16), config),
        events.append,
    )
    flagged = np.zeros(len(noisy), bool)
    flagged[[f.index for f in result.flags]] = True
    precision = (flagged & flipped).sum() / max(flagged.sum(), 1)
    recall = (flagged & flipped).sum() / flipped.sum()
    # Chance precision is the noise rate (0.3); the method must be far above it.
    assert precision > 0.6, (precision, recall)
    assert recall > 0.5, (precision, recall)
    # Most suspect first: the queue's score never increases down the list.
    scores = [f.score for f in result.flags]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    # Refined labels are distributions and fix more labels than they break.
    assert np.allclose(result.refined.sum(1), 1, atol=1e-5)
    assert (result.refined.argmax(1) == clean).mean() > (noisy == clean).mean() + 0.1
    rounds = [e for e in events if "round" in e.metrics]
    assert len(rounds) == result.rounds
    for key in ("loss", "val_loss", "val_accuracy", "changed", "round"):
        assert key in rounds[-1].metrics


class _NaNAfter(nn.Module):
    """A tiny model whose output turns NaN after ``limit`` training forwards."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        self.calls = 0
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.limit:
                return out * float("nan")
        return out


def _toy(n: int = 60) -> tuple[ArrayDataset, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.2
    x[np.arange(n), 0, labels, 0] = 1.0  # learnable signal
    return ArrayDataset(x), labels


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    dataset, labels = _toy()
    config = RefineConfig(max_rounds=5, warmup=1, batch_size=16, device="cpu", val_fraction=0.2)
    # 60 samples, 12 held out -> 48 train / 16 = 3 batches per round: NaN in round 2.
    with pytest.raises(TrainingError, match=r"nan in round 2.*last good checkpoint"):
        run_job(
            iter_train_refine(dataset, labels, 3, lambda: _NaNAfter(3), config, out_dir=tmp_path)
        )
    state = load_checkpoint(tmp_path / "model.pt")
    assert state["round"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_cancel_keeps_checkpoint_and_resume_continues(tmp_path) -> None:
    dataset, labels = _toy()
    config = RefineConfig(max_rounds=4, warmup=1, batch_size=16, device="cpu", label_tol=0)

    def factory() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    job = iter_train_refine(dataset, labels, 3, factory, config, out_dir=tmp_path)
    for event in job:
        if event.metrics.get("round") == 2.0:
            break
    job.close()  # cancel
    state = load_checkpoint(tmp_path / "model.pt")
    assert state["round"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    resumed = run_job(
        iter_train_refine(dataset, labels, 3, factory, config, out_dir=tmp_path, resume=True)
    )
    assert resumed.rounds == 4
    assert [h["round"] for h in resumed.history] == [1.0, 2.0, 3.0, 4.0]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_single_class_and_bad_labels_are_refused() -> None:
    dataset, labels = _toy()
    with pytest.raises(TrainingError, match="same class"):
        run_job(iter_train_refine(dataset, np.zeros(60, int), 3, lambda: nn.Flatten()))
    with pytest.raises(TrainingError, match="class indices"):
        run_job(iter_train_refine(dataset, labels + 5, 3, lambda: nn.Flatten()))


def test_trusted_labels_never_change_in_training() -> None:
    dataset, labels = _toy()
    rng = np.random.default_rng(3)
    noisy = labels.copy()
    noisy[:20] = (labels[:20] + 1) % 3  # trusted *wrong* labels must still stay as given
    trusted = np.zeros(60, bool)
    trusted[:10] = True
    config = RefineConfig(
        max_rounds=6, warmup=1, batch_size=16, device="cpu", seed=int(rng.integers(9))
    )
    result = run_job(
        iter_train_refine(
            dataset,
            noisy,
            3,
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 3)),
            config,
            trusted,
        )
    )
    assert np.array_equal(result.refined[:10], np.eye(3)[noisy[:10]])
    assert not any(f.index < 10 for f in result.flags)


class _DegradesAfter(nn.Module):
    """A linear model whose predictions turn wrong once it has seen ``limit`` training batches.

    The batch count is a buffer, so restoring an earlier round's state restores good predictions.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
        elif int(self.calls) > self.limit:
            out = out.roll(1, dims=-1)  # every prediction moves to the wrong class
        return out


def test_select_best_keeps_the_best_validation_round(tmp_path) -> None:
    dataset, labels = _toy()
    config = RefineConfig(
        max_rounds=5,
        warmup=1,
        batch_size=16,
        lr=0.05,
        device="cpu",
        label_tol=0,
        seed=1,
        augment=False,
        class_balance="none",  # balanced classes: selection reads plain accuracy
    )
    # 60 samples, 9 held out -> 3 batches per round: rounds 4 and 5 predict wrong classes.
    result = run_job(
        iter_train_refine(dataset, labels, 3, lambda: _DegradesAfter(9), config, out_dir=tmp_path)
    )
    accuracies = [h["val_accuracy"] for h in result.history]
    assert result.rounds == 5
    assert max(accuracies[:3]) > max(accuracies[3:])
    assert result.selected_round == int(np.argmax(accuracies)) + 1 <= 3
    assert int(result.model.calls) <= 9
    assert result.last_state is not None and int(result.last_state["calls"]) == 15
    # model.pt of the finished run holds the selected model; resume starts from the last round.
    state = load_checkpoint(tmp_path / "model.pt")
    assert int(state["state_dict"]["calls"]) == int(result.model.calls)
    assert int(state["resume_state_dict"]["calls"]) == 15
    assert state["best_round"] == result.selected_round - 1

    last = run_job(
        iter_train_refine(
            dataset,
            labels,
            3,
            lambda: _DegradesAfter(9),
            RefineConfig.from_dict({**config.to_dict(), "select_best": False}),
        )
    )
    assert last.selected_round == 5 and int(last.model.calls) == 15


# --------------------------------------------------------------------------- class imbalance


def test_balanced_noisy_accuracy_picks_the_clean_threshold() -> None:
    # Scores of 2,000 clean negatives and 100 clean positives; labels then flipped with
    # class-independent rates.  The threshold chosen on the noisy labels must be the one that
    # is best on the clean labels, although the noisy majority would favour "all negative".
    rng = np.random.default_rng(0)
    clean = np.r_[np.zeros(2000, int), np.ones(100, int)]
    score = np.where(
        clean == 1, rng.normal(1.0, 1.0, clean.size), rng.normal(-1.0, 1.0, clean.size)
    )
    noisy = symmetric_flips(clean, 0.3, 2, seed=1)
    log_probs = (
        np.stack([np.zeros_like(score), score], axis=1)
        - 2.0 * np.c_[np.zeros(clean.size), np.ones(clean.size)]
    )
    bias = fit_decision_bias(log_probs, noisy)
    chosen = (log_probs + bias).argmax(1)
    assert balanced_accuracy(chosen, clean) > balanced_accuracy(log_probs.argmax(1), clean) + 0.1
    # Close to the clean optimum (threshold 0 on the score).
    assert (
        balanced_accuracy(chosen, clean) > balanced_accuracy((score > 0).astype(int), clean) - 0.03
    )
    assert np.array_equal(fit_decision_bias(log_probs, np.zeros(clean.size, int)), [0.0, 0.0])


def test_decision_bias_folds_into_the_output_layer() -> None:
    model = SmallCNN(3, 1, 8).eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        assert fold_decision_bias(model, np.array([0.0, 5.0, -1.0]))
        after = model(x)
    assert torch.allclose(after - before, torch.tensor([0.0, 5.0, -1.0]).expand(16, 3), atol=1e-5)
    assert not fold_decision_bias(model, np.zeros(2))


def test_prior_turns_balanced_probabilities_back_into_label_probabilities() -> None:
    balanced = np.array([[0.5, 0.5], [0.2, 0.8]])
    prior = label_prior(np.r_[np.zeros(90, int), np.ones(10, int)], 2)
    assert np.allclose(prior, [0.9, 0.1])
    adjusted = with_prior(balanced, prior)
    assert np.allclose(adjusted[0], [0.9, 0.1])
    assert np.allclose(adjusted.sum(1), 1)
    assert with_prior(balanced, None) is balanced


def test_lost_classes_need_enough_samples_and_almost_no_predictions() -> None:
    given = np.r_[np.zeros(500, int), np.ones(50, int), np.full(5, 2)]
    predicted = np.zeros_like(given)
    assert lost_classes(predicted, given, 3) == [1]  # class 2 has too few samples to judge
    predicted[500:502] = 1  # 2 of 50 = 4 %: still predicted
    assert lost_classes(predicted, given, 3) == []


def test_class_normalised_ranking_is_relative_to_the_class() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])
    given = np.array([0, 0, 1, 1, 1])
    g = suspicion(probs, given, "g")
    assert np.allclose(g, [0.1, 0.4, 0.5, 0.2, 0.4])
    normalised = suspicion(probs, given, "class_normalised")
    # class 0's mean p is 0.75, class 1's 0.633: each label is judged against its class.
    assert np.allclose(
        normalised,
        1 - np.array([0.9 / 0.75, 0.6 / 0.75, 0.5 / 0.6333, 0.8 / 0.6333, 0.6 / 0.6333]),
        atol=1e-3,
    )
    with pytest.raises(TrainingError, match="ranking"):
        suspicion(probs, given, "vibes")
    with pytest.raises(TrainingError, match="class_balance"):
        RefineConfig(class_balance="some").validate()


def _imbalanced(n: int = 400, rare: float = 0.05, signal: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rare).astype(int)
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.3
    x[labels == 1, 0, 2:6, 2:6] += signal * 0.7  # the rare class has a bright centre
    return ArrayDataset(x), labels


def test_collapse_is_reported_and_withholds_the_flags() -> None:
    # Images carry no signal: the only thing to learn is the prior, so without class balance
    # the model predicts the majority everywhere.  It must say so and flag nothing, instead of
    # asking the annotator to relabel every rare label.
    dataset, labels = _imbalanced(signal=0.0)
    config = RefineConfig(
        max_rounds=4, warmup=1, batch_size=32, device="cpu", augment=False, class_balance="none"
    )
    events = []
    result = run_job(
        iter_train_refine(
            dataset, labels, 2, lambda: SmallCNN(2, 1, 8), config, classes=["Normal", "Tumor"]
        ),
        events.append,
    )
    assert result.collapsed and result.lost_classes == ["Tumor"]
    assert result.flags == []
    warnings = [e.message for e in events if e.stage == "warning"]
    assert any("collapsed" in w and "Tumor" in w for w in warnings)
    assert all(h["collapsed"] == 1.0 for h in result.history)


def test_class_balance_learns_the_rare_class_that_plain_training_loses() -> None:
    # A faint signal on 4 % of the samples: plain CE settles on the prior (and the guard says
    # so); with class balance the rare class is learnt.
    dataset, labels = _imbalanced(n=600, rare=0.04, signal=0.1, seed=2)
    common = dict(max_rounds=5, warmup=2, batch_size=32, device="cpu", augment=False, seed=0)

    def recalls(result) -> tuple[float, float]:
        with torch.no_grad():
            predicted = result.model(dataset.images).argmax(1).numpy()
        return tuple(float((predicted[labels == c] == c).mean()) for c in (0, 1))

    plain = run_job(
        iter_train_refine(
            dataset,
            labels,
            2,
            lambda: SmallCNN(2, 1, 8),
            RefineConfig(**common, class_balance="none"),
        )
    )
    balanced = run_job(
        iter_train_refine(dataset, labels, 2, lambda: SmallCNN(2, 1, 8), RefineConfig(**common))
    )
    assert plain.collapsed and recalls(plain)[1] < 0.05
    assert not balanced.collapsed
    assert recalls(balanced)[1] > 0.7 and np.mean(recalls(balanced)) > 0.75


def test_out_of_sample_folds_keep_each_slide_together() -> None:
    rng = np.random.default_rng(4)
    slides = rng.integers(0, 9, 900)
    labels = rng.integers(0, 2, 900)
    fold = group_folds(labels, 3, seed=1, groups=[f"slide_{s}.tif" for s in slides])
    for s in range(9):
        assert len(set(fold[slides == s])) == 1, s
    sizes = np.bincount(fold, minlength=3)
    assert sizes.min() > 0.5 * sizes.max()
    # Without groups, or with fewer groups than folds: stratified by label.
    for plain in (group_folds(labels, 3, seed=1), group_folds(labels, 3, 1, ["a", "b"] * 450)):
        for c in (0, 1):
            counts = np.bincount(plain[labels == c], minlength=3)
            assert counts.max() - counts.min() <= 1


def test_tempered_ranking_lets_a_missed_rare_class_label_reach_the_queue() -> None:
    # 95 Normal labels, 5 Tumor; sample 0 is labelled Normal, and under the labels' class shares
    # the model gives it p(Tumor) = 0.4: not the model's choice, so ``g`` never flags it.
    given = np.r_[np.zeros(95, int), np.ones(5, int)]
    probs = np.tile([0.9, 0.1], (100, 1))
    probs[95:] = [0.3, 0.7]
    probs[0] = [0.6, 0.4]
    refined = np.eye(2)[given]
    g = 1 - probs[np.arange(100), given]
    plain = flag_labels(given, refined, g, 1.0, None, probs, "g")
    assert [f.index for f in plain] == []
    tempered = flag_labels(given, refined, g, 1.0, None, probs, "tempered")
    assert [f.index for f in tempered] == [0] and tempered[0].suggested == 1
    # Half the shares: p / sqrt(share), renormalised.
    expected = np.array([0.6 / math.sqrt(0.95), 0.4 / math.sqrt(0.05)])
    assert np.allclose(ranking_probs(probs, given, "tempered")[0], expected / expected.sum())
    assert np.allclose(ranking_probs(probs, given, "g"), probs)


def _grid_boxes(side: int, patch: int = 128) -> list[tuple[int, int, int, int]]:
    return [(x * patch, y * patch, patch, patch) for y in range(side) for x in range(side)]


def test_patch_neighbours_are_adjacent_cells_of_one_slide_and_grid() -> None:
    boxes = _grid_boxes(3)
    neighbours = patch_neighbours(["a"] * 9, boxes)
    assert sorted(neighbours.of(4).tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]  # the centre
    assert sorted(neighbours.of(0).tolist()) == [1, 3, 4]  # a corner
    # Another slide at the same place, or a patch of another size, is nobody's neighbour.
    mixed = patch_neighbours(
        ["a", "b", "a"], [(0, 0, 128, 128), (128, 0, 128, 128), (0, 0, 64, 64)]
    )
    assert [len(mixed.of(i)) for i in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="2 slides but 1 boxes"):
        patch_neighbours(["a", "b"], [(0, 0, 1, 1)])


def test_regional_ranking_puts_a_doubtful_region_before_a_lone_doubtful_label() -> None:
    # Two 5x5 slides of Normal labels the model calls normal.  On slide "a" the centre 3x3
    # block is a missed focus (model p(Tumor) 0.7); on slide "b" one lone patch has p(Tumor)
    # 0.9 among confident normal neighbours (a correct label the model doubts).
    boxes = _grid_boxes(5)
    slides = ["a"] * 25 + ["b"] * 25
    given = np.zeros(50, int)
    given[[0, 25]] = 1  # a Tumor label on each slide, in a corner (the class shares)
    probs = np.tile([0.95, 0.05], (50, 1))
    probs[[0, 25]] = [0.1, 0.9]
    focus = [6, 7, 8, 11, 12, 13, 16, 17, 18]
    probs[focus] = [0.3, 0.7]
    lone = 25 + 12
    probs[lone] = [0.1, 0.9]
    neighbours = patch_neighbours(slides, boxes + boxes)
    refined = np.eye(2)[given]
    g = 1 - probs[np.arange(50), given]
    tempered = flag_labels(given, refined, g, 1.0, None, probs, "tempered")
    regional = flag_labels(given, refined, g, 1.0, None, probs, "regional", neighbours)
    assert tempered[0].index == lone  # the lone doubt is the most doubtful single label
    assert regional[0].index == 12 and {f.index for f in regional[:9]} == set(focus)
    assert all(f.suggested == 1 for f in regional if f.index in focus)
    # The probabilities behind it: class-balanced, then a third the patch's own, two thirds
    # its 8 neighbours'.
    balanced = probs / (np.bincount(given) / 50)
    balanced /= balanced.sum(axis=1, keepdims=True)
    centre = (4 * balanced[12] + balanced[[6, 7, 8, 11, 13, 16, 17, 18]].sum(0)) / 12
    assert np.allclose(ranking_probs(probs, given, "regional", neighbours)[12], centre)
    # Without positions every patch is its own neighbourhood: the class-balanced order.
    assert np.allclose(ranking_probs(probs, given, "regional"), balanced)
    with pytest.raises(TrainingError, match="49 patch positions but 50 labels"):
        ranking_probs(probs, given, "regional", patch_neighbours(slides[:49], boxes + boxes[:24]))


def _rare_class_run(shift: float, toward: str) -> tuple[float, float, bool]:
    """Tumour-label recall and normal-label recall of the refined clean labels, and collapse."""
    rng = np.random.default_rng(3)
    labels = (rng.random(1500) < 0.06).astype(int)
    features = rng.standard_normal((1500, 2)).astype(np.float32)
    features[:, 0] += shift * labels
    config = RefineConfig(
        max_rounds=8, warmup=2, batch_size=64, lr=1e-2, device="cpu", refine_toward=toward
    )
    result = train_refine(
        FeatureDataset(features),
        labels,
        2,
        lambda: StainFeatureClassifier(2, 8, num_features=2),
        config,
        compute_flags=False,
    )
    refined = result.refined.argmax(1)
    return (
        float((refined[labels == 1] == 1).mean()),
        float((refined[labels == 0] == 0).mean()),
        bool(result.collapsed),
    )


def test_refining_towards_the_decision_keeps_a_rare_class() -> None:
    # One separating feature, 6 % positives, clean labels.  Refined towards the probabilities
    # under the label prior, half the positives' labels drift to the common class ...
    tumour, normal, collapsed = _rare_class_run(3.0, "label_prior")
    assert tumour < 0.8 and not collapsed
    tumour, normal, collapsed = _rare_class_run(3.0, "decision")
    assert tumour > 0.9 and normal > 0.9 and not collapsed
    # ... and with a weaker feature the prior's argmax never says Tumor: the guard calls the
    # run collapsed and nothing is refined, where the decision still separates the classes.
    assert _rare_class_run(2.0, "label_prior")[2]
    tumour, normal, collapsed = _rare_class_run(2.0, "decision")
    assert tumour > 0.9 and normal > 0.9 and not collapsed
