"""Smoke-test a built bundle headless: ``--version``, a slide/torch/Qt self-check, ``screenshot``.

    python packaging/smoke_test.py dist/pathviewer/pathviewer [--slide SLIDE] [--out DIR]

The slide defaults to the shared fixture CMU-1-Small-Region.svs (then boxes.tiff).  Exits 0
when every check passes and prints one line per check; non-zero with the failing output
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "fixtures"
CANDIDATE_SLIDES = (
    SHARED / "real" / "CMU-1-Small-Region.svs",
    SHARED / "openslide" / "boxes.tiff",
)


def _version() -> str:
    namespace: dict[str, str] = {}
    exec((REPO / "pathviewer" / "_version.py").read_text(encoding="utf-8"), namespace)
    return namespace["__version__"]


class SmokeFailure(Exception):
    """A check failed; the message holds the command's output."""


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SmokeFailure(
            f"{' '.join(cmd)} exited {result.returncode} after {took:.1f} s\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    print(f"  ({took:.1f} s)", flush=True)
    return result.stdout


def smoke_test(exe: Path, slide: Path | None, out_dir: Path, timeout: float = 300) -> None:
    """Run every check; raise :class:`SmokeFailure` on the first that fails."""
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        PATHVIEWER_LOG_DIR=str(out_dir / "logs"),
        PATHVIEWER_DATA_DIR=str(out_dir / "data"),
        XDG_CONFIG_HOME=str(out_dir / "config"),
    )
    env.pop("PYTHONPATH", None)  # the bundle must not lean on the build venv
    env.pop("PATHVIEWER_RESOURCES", None)

    print(f"smoke: {exe} --version", flush=True)
    output = _run([str(exe), "--version"], env, timeout).strip()
    if output != f"pathviewer {_version()}":
        raise SmokeFailure(f"--version printed {output!r}, expected 'pathviewer {_version()}'")
    print(f"  ok: {output}")

    if slide is None:
        print("smoke: no fixture slide available; slide checks skipped")
        return

    print(f"smoke: self-check (OpenSlide, torch, Qt, resources) on {slide.name}", flush=True)
    report = json.loads(
        _run([str(exe)], dict(env, PATHVIEWER_BUNDLE_SELFTEST=str(slide)), timeout)
        .strip()
        .splitlines()[-1]
    )
    problems = []
    if not report.get("frozen"):
        problems.append("not running frozen")
    if report.get("torch_cuda") is not None:
        problems.append(f"bundled torch is a CUDA build ({report['torch_cuda']})")
    if len(report.get("region_shape", [])) != 3 or report["region_shape"][2] != 3:
        problems.append(f"bad region shape {report.get('region_shape')}")
    if report.get("resnet18_params") != 11_689_512:
        problems.append(f"torchvision resnet18 wrong: {report.get('resnet18_params')}")
    if report.get("icon_sizes") != [16, 64]:
        problems.append(f"icon did not render: {report.get('icon_sizes')}")
    if problems:
        raise SmokeFailure("; ".join(problems) + f"\n{report}")
    print(f"  ok: {json.dumps(report)}")

    help_text = _run([str(exe), "--help"], env, timeout)
    if "screenshot" not in help_text:
        print("smoke: this build has no `screenshot` command; skipped")
        return
    png = out_dir / "screenshot.png"
    print(f"smoke: {exe} screenshot {slide.name} {png}", flush=True)
    _run([str(exe), "screenshot", str(slide), str(png), "--size", "1000x700"], env, timeout)
    from PIL import Image

    with Image.open(png) as image:
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        if image.size != (1000, 700) or colours is None or len(colours) < 50:
            raise SmokeFailure(
                f"screenshot looks wrong: {image.size}, {len(colours or [])} colours"
            )
    print(f"  ok: {png} {image.size[0]}x{image.size[1]}, {len(colours)} colours")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exe", type=Path, help="the bundle's executable")
    parser.add_argument("--slide", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args(argv)
    slide = args.slide or next((p for p in CANDIDATE_SLIDES if p.exists()), None)
    if not args.exe.exists():
        print(f"smoke: {args.exe} does not exist; build the bundle first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pathviewer-smoke-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            smoke_test(args.exe.resolve(), slide, out_dir)
        except (SmokeFailure, subprocess.TimeoutExpired) as error:
            print(f"smoke: FAILED: {error}", file=sys.stderr)
            return 1
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
