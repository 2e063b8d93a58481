"""Entry script of the PyInstaller bundle (``dist/pathviewer/pathviewer``).

It behaves like the ``pathviewer`` command: with a subcommand it does headless work, without
one (or with slide paths) it opens the viewer, so a desktop file association can run
``pathviewer %F``.

``PATHVIEWER_BUNDLE_SELFTEST=<slide>`` runs a headless check of what a bundle most often gets
wrong (the OpenSlide library, CPU torch, Qt's offscreen platform and the app resources) and prints
one JSON line; ``packaging/smoke_test.py`` uses it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys


def _selftest(slide_path: str) -> int:
    """Open ``slide_path``, run a tiny torch model, render with Qt; print a JSON summary."""
    import numpy as np

    from pathviewer.core.slide import open_slide
    from pathviewer.resources import resource_path

    report: dict[str, object] = {"frozen": bool(getattr(sys, "frozen", False))}
    slide = open_slide(slide_path)
    try:
        width, height = slide.dimensions
        region = slide.read_region((0, 0), 0, (min(width, 64), min(height, 64)))
        report.update(
            slide=os.path.basename(slide_path),
            vendor=slide.vendor,
            dimensions=[width, height],
            region_shape=list(region.shape),
            region_mean=float(np.asarray(region).mean()),
        )
    finally:
        slide.close()

    import torch

    torch.set_num_threads(1)
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        out = conv(torch.from_numpy(np.ascontiguousarray(region)).permute(2, 0, 1)[None].float())
    import torchvision

    # torchvision's models are plain Python on top of torch; build one to prove they import.
    model = torchvision.models.resnet18(weights=None)
    report.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        torch_out=list(out.shape),
        torchvision=torchvision.__version__,
        resnet18_params=sum(p.numel() for p in model.parameters()),
    )

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication, QIcon

    app = QGuiApplication.instance() or QGuiApplication([])
    icon = QIcon(str(resource_path("icons/pathviewer.svg")))
    report.update(
        qt_platform=app.platformName(),
        icon_sizes=[icon.pixmap(s, s).width() for s in (16, 64)],
    )
    print(json.dumps(report))
    return 0


def main() -> int:
    """Run the bundled app."""
    # A frozen app re-enters this script in multiprocessing / DataLoader worker processes.
    multiprocessing.freeze_support()
    slide = os.environ.get("PATHVIEWER_BUNDLE_SELFTEST")
    if slide:
        return _selftest(slide)
    from pathviewer.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
