"""Settings of NGSD runs and their CPU preset (no trainer here: model files and the GUI read them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pathviewer.core.errors import TrainingError
from pathviewer.ml.encoder_name import TIMM_PREFIX, check_encoder

METHODS = ("ngsd", "naive", "abmil")


def _f(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002 - "help" as in argparse
    """A dataclass field with GUI/CLI metadata (help text, min, max, choices)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class NGSDConfig:
    """Settings of an NGSD run (paper defaults); each field's metadata holds help, min and max."""

    #: Plain labels of the settings form (the field names stay the CLI's and the tooltips').
    LABELS: ClassVar[dict[str, str]] = {
        "patch_size": "Patch size (level-0 px)",
        "read_downsample": "Read downsample",
        "magnification": "Read magnification",
        "input_size": "Network input (px)",
        "threshold": "Background filter (edge score)",
        "batch_size": "Batch size",
        "positive_fraction": "Positive-slide share per batch",
        "epochs": "Epochs",
        "steps": "Steps (0: from epochs)",
        "lr": "Learning rate",
        "weight_decay": "Weight decay",
        "k": "Tumour share K of positive slides",
        "sk_lambda": "Sinkhorn-Knopp sharpness λ",
        "ema": "Teacher EMA momentum",
        "arch": "Encoder",
        "weights": "Encoder weights file",
        "freeze_encoder": "Freeze the encoder (train the heads)",
        "pooling": "Slide score pooling",
        "top_k": "Top-k patches pooled",
        "prob_threshold": "Patch positive above",
        "device": "Device",
        "amp": "Mixed precision (CUDA)",
        "workers": "Loader workers",
        "threads": "CPU threads",
        "preload_mb": "Preload patches up to (MB)",
        "seed": "Random seed",
        "log_every": "Steps between log lines",
        "checkpoint_every": "Steps between checkpoints",
        "eval_every": "Steps between validations",
        "method": "Method",
        "stain_augment": "Stain jitter",
        "stain_norm": "Stain normalisation",
        "mining": "Hard-negative mining",
        "calibrate_bank": "Calibrate the bank",
        "bank_marginal": "Bank marginal",
        "teacher_view": "Teacher view",
        "bank_smoothing": "Bank smoothing",
        "naive_warmup": "Naive warm-up steps",
        "bank_prior": "Bank prior",
        "prior_weight": "Prior weight",
        "select_best": "Keep the best step",
    }

    patch_size: int = _f(512, "patch side in level-0 pixels", min=32, max=4096)
    read_downsample: float = _f(
        1.0, "downsample at which patches are read (1 = full resolution)", min=1.0, max=64.0
    )
    magnification: float = _f(
        20.0,
        "read at this objective magnification (paper: 20x; 0 = use read_downsample; slides"
        " without objective power are read at full resolution)",
        min=0.0,
        max=100.0,
    )
    input_size: int = _f(224, "network input side in pixels", min=32, max=1024)
    threshold: float = _f(15.0, "background filter: keep patches with edge score above", min=0.0)
    batch_size: int = _f(64, "patches per batch", min=2, max=1024)
    positive_fraction: float = _f(
        0.5, "share of positive-slide patches per batch", min=0.05, max=0.95
    )
    epochs: int = _f(10, "passes over the training patches (when steps is 0)", min=1, max=1000)
    steps: int = _f(0, "training steps (0 = from epochs)", min=0, max=10_000_000)
    lr: float = _f(1e-4, "Adam learning rate of the student", min=1e-7, max=1.0)
    weight_decay: float = _f(1e-5, "Adam weight decay", min=0.0, max=1.0)
    k: float = _f(
        0.3,
        "K: estimated positive-patch fraction in positive slides; when unsure, overestimate"
        " (1.5-4x the tumour share did equally well, below it the bank degenerates)",
        min=0.01,
        max=0.99,
    )
    sk_lambda: float = _f(
        5.0, "Sinkhorn-Knopp sharpening (1 / entropic regularisation)", min=0.1, max=100.0
    )
    ema: float = _f(0.99, "teacher EMA momentum lam", min=0.0, max=0.99999)
    arch: str = _f(
        "resnet18",
        "encoder: a torchvision ResNet or a timm architecture, timm:NAME[,key=value...] (with"
        " its own input size when fixed, and its own normalisation)",
        choices=("resnet18", "resnet34", "resnet50"),
        other=f"{TIMM_PREFIX}NAME",
    )
    weights: str = _f(
        "",
        "encoder weights file (.safetensors, .pt, .pth, .bin; never downloaded); only needed"
        " to train: model.pt keeps the trained weights",
    )
    freeze_encoder: bool = _f(
        False,
        "keep the encoder's weights: each patch's features are computed once (no augmentation)"
        " and only the teacher/student heads train (fast on a CPU)",
    )
    pooling: str = _f("topk", "slide score pooling", choices=("max", "topk", "fraction"))
    top_k: int = _f(5, "patches averaged by top-k pooling", min=1, max=1000)
    prob_threshold: float = _f(
        0.5, "patch positive above this (fraction pooling)", min=0.0, max=1.0
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", choices=("auto", "cpu", "cuda"))
    amp: bool = _f(True, "bfloat16 autocast on CUDA")
    workers: int = _f(-1, "DataLoader workers (-1 = automatic)", min=-1, max=64)
    threads: int = _f(0, "torch CPU threads (0 = torch default)", min=0, max=256)
    preload_mb: int = _f(2048, "read all patches into RAM when they fit in this budget", min=0)
    seed: int = _f(0, "random seed", min=0)
    log_every: int = _f(5, "steps between metric lines", min=1)
    checkpoint_every: int = _f(50, "steps between checkpoints", min=1)
    eval_every: int = _f(
        25, "steps between validation instance AUCs (split=val slides with annotations)", min=1
    )
    method: str = _f("ngsd", "training method", choices=METHODS)
    stain_augment: float = _f(
        0.05,
        "H&E stain jitter (HED space, Tellez 2018): half-width of the per-stain scale; 0 = off",
        min=0.0,
        max=1.0,
    )
    stain_norm: str = _f(
        "none",
        "Macenko stain normalisation fitted on the training slides, applied in training and"
        " inference: per patch (macenko) or with each slide's own stains (macenko-slide, which"
        " keeps darker nuclei darker within a slide)",
        choices=("none", "macenko", "macenko-slide"),
    )
    mining: float = _f(
        0.0,
        "share of each batch's positive-slide patches drawn in proportion to their pseudo-labels"
        " (hard-positive mining; 0 = uniform, as in the paper): a small tumour is otherwise"
        " seen about once a batch",
        min=0.0,
        max=1.0,
    )
    calibrate_bank: bool = _f(
        True,
        "store teacher scores relative to the same batch's negative-slide patches (logit minus"
        " their median), so scores from early and late in training stay comparable",
    )
    bank_marginal: str = _f(
        "cohort",
        "where the pseudo-labels' positive share K is enforced: over all scored positive-slide"
        " patches (cohort, the paper) or within each positive slide (slide), so slide-wide"
        " differences such as stain cannot take the positive mass",
        choices=("cohort", "slide"),
    )
    teacher_view: str = _f(
        "augmented",
        "what the teacher scores for the bank: an augmented view (the paper) or the patch as"
        " inference sees it (plain), so bank scores follow the patch, not the augmentation",
        choices=("augmented", "plain"),
    )
    bank_smoothing: float = _f(
        0.0,
        "share of a patch's stored bank score kept when the teacher scores it again (an average"
        " over augmented views, in logit space; 0 = the latest score only, as in the paper)",
        min=0.0,
        max=0.95,
    )
    naive_warmup: int = _f(
        0,
        "steps at the start that train positive-slide patches towards 1 (naive MIL) before the"
        " bank's pseudo-labels take over: gives the teacher features to rank patches with",
        min=0,
    )
    bank_prior: str = _f(
        "stain",
        "where the bank's first ranking comes from: the untrained teacher (none, the paper) or"
        " stain statistics standardised within each slide and separated by slide label (stain),"
        " blended into the teacher's scores as it learns",
        choices=("none", "stain"),
    )
    prior_weight: float = _f(
        0.5,
        "with bank_prior stain: the prior's share of the bank's scores (in logit space) once"
        " it has faded from 1 over the first half of training",
        min=0.0,
        max=1.0,
    )
    select_best: bool = _f(
        True, "keep the student of the best validation instance AUC (val slides with annotations)"
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON and checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NGSDConfig:
        """Build from a dict, ignoring unknown keys (files of other versions)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first setting out of its range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "min" in meta and value < meta["min"]:
                raise TrainingError(f"setting {f.name}={value} is below its minimum {meta['min']}")
            if "max" in meta and value > meta["max"]:
                raise TrainingError(f"setting {f.name}={value} is above its maximum {meta['max']}")
            if "other" in meta:
                check_encoder(f.name, value, meta["choices"])
            elif "choices" in meta and value not in meta["choices"] and f.name != "device":
                raise TrainingError(
                    f"setting {f.name}={value!r} is not one of {', '.join(meta['choices'])}"
                )


def demo_config(**overrides: Any) -> NGSDConfig:
    """The CPU preset: what ``--demo``, the app's demo and the realistic benchmark train.

    256 px level-0 patches read at downsample 2 (128 px, 10x) into a 64 px network input, 400
    steps of 32 (about 2.5 minutes on two idle cores).  Chosen on realistic cohorts (see
    docs/ngsd.md): K 0.1 (tumour is a small share of positive slides), softer pseudo-labels
    (Sinkhorn-Knopp lambda 2), a slower teacher (EMA 0.99), strong H&E stain jitter (0.25),
    half of the positive-slide patches of a batch mined from the bank, K enforced within each
    positive slide, and the bank filled from unaugmented teacher views.  As in every run unless
    told otherwise, the bank starts from the stain prior, and the heatmap blends it in at half
    weight (:mod:`pathviewer.ml.stain_prior`).
    """
    base = dict(
        patch_size=256,
        read_downsample=2.0,
        magnification=0.0,
        input_size=64,
        batch_size=32,
        steps=400,
        lr=1e-3,
        ema=0.99,
        k=0.1,
        sk_lambda=2.0,
        stain_augment=0.25,
        mining=0.5,
        bank_marginal="slide",
        teacher_view="plain",
        log_every=5,
        checkpoint_every=25,
        top_k=3,
    )
    base.update(overrides)
    return NGSDConfig(**base)  # type: ignore[arg-type]
