"""One soft cross entropy for both trainers; one device rule."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pathviewer.core.errors import TrainingError  # noqa: E402
from pathviewer.ml.device import pick_device  # noqa: E402
from pathviewer.ml.losses import soft_cross_entropy  # noqa: E402


def test_soft_cross_entropy_is_cross_entropy_for_hard_labels_and_exact_for_soft_ones() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    hard = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]), reduction="none")
    assert torch.allclose(soft_cross_entropy(logits, hard), expected)
    # NGSD's two-class pseudo-labels q: -(q log p1 + (1 - q) log p0).
    two = torch.tensor([[1.0, 3.0]], dtype=torch.bfloat16)
    q = torch.tensor([0.25])
    logp = torch.log_softmax(two.float(), dim=1)
    ngsd = -(q * logp[:, 1] + (1 - q) * logp[:, 0])
    value = soft_cross_entropy(two, torch.stack([1 - q, q], dim=1))
    assert value.dtype == torch.float32 and torch.allclose(value, ngsd)


def test_asking_for_cuda_without_it_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainingError, match="CUDA is not available"):
        pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "mps")
