"""Build the PyInstaller one-folder bundle (dist/pathviewer/) and smoke-test it.

``make bundle`` runs this.  Steps:

1. Pick the Python that runs PyInstaller.  With ``--torch cpu`` (the default) and a CUDA torch
   in the current venv, a small *overlay* venv is made in ``build/bundle-venv``: it holds only a
   CPU torch (and a matching torchvision) and sees every other package of the current venv
   through a ``.pth`` file.  The bundle then needs none of the NVIDIA wheels (gigabytes).
   ``--torch current`` bundles the current torch as it is.
2. Run PyInstaller on ``packaging/pathviewer.spec``.
3. Run ``packaging/smoke_test.py`` on the result, and print the bundle's size.

The CPU wheels come from pip's configured indexes / find-links; on a machine with network access
add ``--pip-args="--extra-index-url https://download.pytorch.org/whl/cpu"``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "packaging" / "pathviewer.spec"
OVERLAY = REPO / "build" / "bundle-venv"
#: CPU builds for the bundle; override with --cpu-torch or PATHVIEWER_BUNDLE_TORCH.
DEFAULT_CPU_TORCH = os.environ.get(
    "PATHVIEWER_BUNDLE_TORCH", "torch==2.13.0+cpu torchvision==0.28.0"
)


def torch_is_cuda_build() -> bool:
    """True when the current environment's torch wheel depends on nvidia-* wheels."""
    try:
        requires = importlib.metadata.distribution("torch").requires or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(req.lower().startswith("nvidia-") for req in requires)


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def overlay_python(cpu_torch: str, pip_args: str) -> Path:
    """A Python whose torch is a CPU build and whose other packages are the current venv's."""
    python = OVERLAY / "bin" / "python"
    site = Path(sysconfig.get_paths()["purelib"])
    stamp = OVERLAY / ".torch-stamp"
    if python.exists() and stamp.exists() and stamp.read_text() == cpu_torch:
        return python
    shutil.rmtree(OVERLAY, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(OVERLAY)])
    overlay_site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # Installed with --no-deps into the overlay only: the rest comes from the current venv.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(overlay_site),
            *shlex.split(pip_args),
            *shlex.split(cpu_torch),
        ]
    )
    # Processed after the overlay's own folder, so the CPU torch shadows the venv's CUDA torch.
    (overlay_site / "zz_pathviewer_overlay.pth").write_text(
        f"import site; site.addsitedir({str(site)!r})\n"
    )
    check = subprocess.check_output(
        [str(python), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
        text=True,
    )
    print("overlay torch:", check.strip(), flush=True)
    stamp.write_text(cpu_torch)
    return python


def bundle_size(folder: Path) -> int:
    """Total size in bytes of the files under ``folder`` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", choices=("cpu", "current"), default="cpu")
    parser.add_argument("--cpu-torch", default=DEFAULT_CPU_TORCH, help="pip requirements")
    parser.add_argument("--pip-args", default="", help="extra pip arguments for the CPU torch")
    parser.add_argument("--dist", type=Path, default=REPO / "dist")
    parser.add_argument("--clean", action="store_true", help="rebuild PyInstaller's cache")
    parser.add_argument("--no-build", action="store_true", help="only smoke-test dist/")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    args = parser.parse_args(argv)

    python = Path(sys.executable)
    if args.torch == "cpu" and torch_is_cuda_build():
        try:
            python = overlay_python(args.cpu_torch, args.pip_args)
        except subprocess.CalledProcessError as error:
            print(
                f"build_bundle: could not install a CPU torch ({args.cpu_torch}): {error}.\n"
                "Give --pip-args with an index that has it, or --torch current.",
                file=sys.stderr,
            )
            return 2

    if not args.no_build:
        started = time.monotonic()
        cmd = [
            str(python),
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(args.dist),
            "--workpath",
            str(REPO / "build" / "pyinstaller"),
            str(SPEC),
        ]
        if args.clean:
            cmd.insert(3, "--clean")
        env = dict(os.environ, PYTHONNOUSERSITE="1")
        _run(cmd, cwd=REPO, env=env)
        print(f"build_bundle: PyInstaller took {time.monotonic() - started:.0f} s", flush=True)

    bundle = args.dist / "pathviewer"
    size = bundle_size(bundle)
    print(f"build_bundle: {bundle} is {size / 2**20:.0f} MiB", flush=True)
    if args.no_smoke:
        return 0
    smoke = [sys.executable, str(REPO / "packaging" / "smoke_test.py"), str(bundle / "pathviewer")]
    return subprocess.run(smoke, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
