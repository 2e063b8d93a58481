"""Settings of a label-refinement run (torch-free, so the GUI can show them without torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from pathviewer.core.errors import TrainingError
from pathviewer.core.ranking import RANKINGS
from pathviewer.ml.encoder_name import TIMM_PREFIX, check_encoder


def _meta(
    help: str,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[str] | None = None,
    other: str | None = None,
) -> dict[str, Any]:
    """Field metadata for a GUI settings form (help text, range, choices, the form of others)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = list(choices)
    if other is not None:
        meta["other"] = other
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    return meta


#: ``class_balance`` settings (see :func:`label_prior` and the module docstring).
CLASS_BALANCE = ("logit_adjust", "weights", "none")

#: ``refine_toward`` settings (see the training loop's step 4).
REFINE_TOWARD = ("decision", "label_prior", "balanced")

#: Patch classifiers a refinement run can train (``model``): name -> what it is; a timm encoder
#: (``timm:NAME``, :mod:`pathviewer.ml.encoder_name`) with a linear head can be named too.
REFINE_MODELS: dict[str, str] = {
    "resnet18": "ResNet18 on the patches' pixels (GPU)",
    "small": "a small CNN on the patches' pixels",
    "stain": "a small network on slide-standardised stain statistics (seconds on a CPU)",
}

#: A class is "lost" when the model predicts it for fewer than this share of the samples given it.
LOST_CLASS_RECALL = 0.01

#: ... and at least this many samples are given it (fewer say nothing about collapse).
LOST_CLASS_MIN_SAMPLES = 10


@dataclass
class RefineConfig:
    """Settings of a label-refinement run (every field has ``help``/``min``/``max`` metadata).

    The defaults suit a GPU and 224 px patches; :func:`demo_config` is a CPU-sized variant.
    """

    #: Plain labels of the settings form (the field names stay the CLI's and the tooltips').
    LABELS: ClassVar[dict[str, str]] = {
        "model": "Patch classifier",
        "weights": "Encoder weights file",
        "freeze_encoder": "Freeze the encoder (train the head)",
        "max_rounds": "Training rounds (at most)",
        "epochs_per_round": "Epochs per round",
        "warmup": "Warm-up rounds (no refinement)",
        "bins": "Gradient-density bins (GHM)",
        "momentum": "Density EMA momentum",
        "mu": "Gaussian weight centre μ",
        "gamma": "Refinement exponent γ",
        "use_ghm": "Gradient-density weight α",
        "use_gaussian": "Gaussian weight β",
        "refine": "Refine the labels",
        "lr": "Learning rate",
        "weight_decay": "Weight decay",
        "batch_size": "Batch size",
        "val_fraction": "Held-out share",
        "label_tol": "Stop when labels change less than",
        "loss_tol": "... and the held-out loss less than",
        "flag_threshold": "Also flag when g exceeds",
        "g_ema": "Prediction EMA momentum",
        "oos_folds": "Out-of-sample folds for flags",
        "select_best": "Keep the best round",
        "class_balance": "Class imbalance",
        "refine_toward": "Refine labels towards",
        "rank_by": "Review queue order",
        "augment": "Flips and rotations",
        "input_size": "Network input (px)",
        "device": "Device",
        "seed": "Random seed",
        "num_workers": "Loader worker processes",
    }

    model: str = field(
        default="resnet18",
        metadata=_meta(
            "patch classifier: resnet18 or small (pixels), stain (stain statistics of each "
            "patch relative to its slide; seconds on a CPU), or a timm encoder with a linear "
            "head, timm:NAME[,key=value...] (its own normalisation, and input size when fixed)",
            choices=list(REFINE_MODELS),
            other=f"{TIMM_PREFIX}NAME",
        ),
    )
    weights: str = field(
        default="",
        metadata=_meta(
            "encoder weights file of resnet18 or a timm encoder (.safetensors, .pt, .pth, .bin;"
            " never downloaded); only needed to train: model.pt keeps the trained weights"
        ),
    )
    freeze_encoder: bool = field(
        default=False,
        metadata=_meta(
            "keep the encoder's weights: each patch's features are computed once (no "
            "augmentation) and only the linear head trains (fast on a CPU)"
        ),
    )
    max_rounds: int = field(
        default=30, metadata=_meta("maximum training rounds (epochs x epochs_per_round)", 1, 10000)
    )
    epochs_per_round: int = field(
        default=1, metadata=_meta("epochs between two label refinements", 1, 100)
    )
    warmup: int = field(
        default=5, metadata=_meta("rounds before the first label refinement", 0, 10000)
    )
    bins: int = field(
        default=10, metadata=_meta("gradient-density regions of [0, 1] (GHM bins)", 1, 1000)
    )
    momentum: float = field(
        default=0.75, metadata=_meta("EMA momentum of the region counts (0: this batch only)", 0, 1)
    )
    mu: float = field(
        default=0.3,
        metadata=_meta("gradient learning centre: g with the largest Gaussian weight", 0, 1),
    )
    gamma: float = field(
        default=3.0,
        metadata=_meta(
            "y' = (1 - g^gamma) y + g^gamma p: a larger gamma changes only the labels the model"
            " disagrees with most",
            0,
            10,
        ),
    )
    use_ghm: bool = field(
        default=True,
        metadata=_meta(
            "alpha = N / GD(g) (GHM-C): down-weights the many easy and the many"
            " hopeless samples, whose gradient norms crowd the same bins"
        ),
    )
    use_gaussian: bool = field(default=True, metadata=_meta("use the Gaussian weight beta"))
    refine: bool = field(default=True, metadata=_meta("refine labels after the warm-up"))
    lr: float = field(default=1e-3, metadata=_meta("Adam learning rate", 1e-7, 1.0))
    weight_decay: float = field(default=1e-4, metadata=_meta("Adam weight decay", 0, 1))
    batch_size: int = field(default=64, metadata=_meta("mini-batch size", 2, 4096))
    val_fraction: float = field(
        default=0.15, metadata=_meta("fraction of samples held out for the validation loss", 0, 0.9)
    )
    label_tol: float = field(
        default=1e-3, metadata=_meta("stop when labels change less than this (mean L1)", 0, 2)
    )
    loss_tol: float = field(
        default=1e-3, metadata=_meta("... and the validation loss changes less than this", 0, 100)
    )
    flag_threshold: float = field(
        default=1.0,
        metadata=_meta(
            "also flag samples whose g exceeds this (1: only labels the model assigns elsewhere)",
            0,
            1,
        ),
    )
    g_ema: float = field(
        default=0.7,
        metadata=_meta("EMA momentum of each sample's predictions (and g) over rounds", 0, 1),
    )
    oos_folds: int = field(
        default=0,
        metadata=_meta("folds for out-of-sample flag probabilities (0: training model's)", 0, 20),
    )
    select_best: bool = field(
        default=True,
        metadata=_meta("keep the round with the best validation accuracy (else the last round)"),
    )
    class_balance: str = field(
        default="logit_adjust",
        metadata=_meta(
            "imbalanced labels: logit_adjust trains on logits offset by the log class prior, "
            "weights weighs each class's samples by its inverse frequency (both predict with "
            "balanced classes); none: every sample weighs the same",
            choices=CLASS_BALANCE,
        ),
    )
    refine_toward: str = field(
        default="decision",
        metadata=_meta(
            "under class balance, the predictions labels are refined towards: decision (the "
            "balanced predictions shifted by the decision offsets fitted on held-out labels), "
            "label_prior (under the given labels' class shares: pulls a rare class's labels "
            "to the common class), balanced (no prior: pulls towards the rare class)",
            choices=list(REFINE_TOWARD),
        ),
    )
    rank_by: str = field(
        default="regional",
        metadata=_meta("what orders the review queue (see RANKINGS)", choices=list(RANKINGS)),
    )
    augment: bool = field(default=True, metadata=_meta("random flips and 90-degree rotations"))
    input_size: int = field(default=224, metadata=_meta("patch side fed to the network", 8, 2048))
    device: str = field(default="auto", metadata=_meta("auto, cpu, cuda, cuda:1, mps"))
    seed: int = field(default=0, metadata=_meta("random seed", 0, 2**31 - 1))
    num_workers: int = field(default=0, metadata=_meta("data-loader worker processes", 0, 64))

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first setting outside its range or choices."""
        for f in fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if "other" in f.metadata:
                check_encoder(f.name, value, choices or [])
            elif choices is not None and value not in choices:
                raise TrainingError(
                    f"setting {f.name}={value!r} is not one of {', '.join(map(str, choices))}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            low, high = f.metadata.get("min"), f.metadata.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                raise TrainingError(f"setting {f.name}={value} is outside [{low}, {high}]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefineConfig:
        """Build from a dict (unknown keys ignored, so old config files still load)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def demo_config() -> RefineConfig:
    """A CPU-sized configuration (small inputs, few rounds) for demos and tests."""
    return RefineConfig(
        max_rounds=12, warmup=3, batch_size=32, input_size=64, device="cpu", model="stain"
    )
