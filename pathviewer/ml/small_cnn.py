"""A small convolutional classifier for tiny images (8x8 digits, 32-96 px patch crops).

It trains in seconds on a CPU, which is what the label-refinement tests and the benchmark need;
slide patches at full size use :func:`pathviewer.ml.models.build_classifier` instead.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks (BatchNorm, ReLU), global average pooling and a linear head.

    Parameters
    ----------
    num_classes
        Output classes.
    in_channels
        1 for grey images (digits), 3 for RGB patches.
    width
        Channels of the first block (doubled in the later blocks).
    dropout
        Dropout before the head.

    Notes
    -----
    Pooling happens only while the feature map is at least 4 px wide, so the same network
    works on 8x8 digits and on 96 px crops; global average pooling makes it size agnostic.
    Input images are floats in [0, 1], ``(B, C, H, W)``.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        channels = [in_channels, width, width * 2, width * 2]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(channels[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(3)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        x = images - 0.5  # centre the [0, 1] input; BatchNorm handles the scale
        for block in self.blocks:
            x = block(x)
            if min(x.shape[-2:]) >= 8:
                x = nn.functional.max_pool2d(x, 2)
        x = x.mean(dim=(-2, -1))
        return self.head(self.dropout(x))
