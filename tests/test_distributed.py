"""torchrun scale-out: 2 gloo ranks train NGSD on CPU; sharded inference merged = single run."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pathviewer.cli import main

STEPS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def ddp_run(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``torchrun --nproc_per_node=2 -m pathviewer train ngsd`` on CPU (gloo), tiny settings."""
    base = tmp_path_factory.mktemp("ddp")
    run, debug = base / "run", base / "debug"
    env = {
        **os.environ,
        "PATHVIEWER_DIST_DEBUG": str(debug),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "pathviewer",
        "train",
        "ngsd",
        "--cohort",
        str(small_cohort),
        "--out",
        str(run),
        "--demo",
        "--steps",
        str(STEPS),
        "--batch-size",
        "8",
        "--input-size",
        "32",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"run": run, "debug": debug, "stdout": proc.stdout, "stderr": proc.stderr}


def test_torchrun_training_keeps_ranks_identical(ddp_run: dict[str, object]) -> None:
    run, debug = Path(str(ddp_run["run"])), Path(str(ddp_run["debug"]))
    dumps = [np.load(debug / f"ngsd-rank{r}.npz") for r in (0, 1)]
    for dump in dumps:
        assert int(dump["steps"]) == STEPS
    # Same Prediction Bank (bit for bit), same SK solution, same weights on both ranks.
    np.testing.assert_array_equal(dumps[0]["bank_probs"], dumps[1]["bank_probs"])
    np.testing.assert_array_equal(dumps[0]["bank_seen"], dumps[1]["bank_seen"])
    assert float(dumps[0]["bank_tau"]) == float(dumps[1]["bank_tau"])
    assert str(dumps[0]["teacher"]) == str(dumps[1]["teacher"])
    assert str(dumps[0]["student"]) == str(dumps[1]["student"])
    # Each rank samples its own shard (bank slots r::2); both shards' updates reached the bank.
    seen = np.flatnonzero(dumps[0]["bank_seen"])
    assert set((seen % 2).tolist()) == {0, 1}
    assert not np.all(dumps[0]["bank_probs"][seen] == 0.5)  # the teacher's values, not the init

    # Only rank 0 wrote the run folder and printed the summary.
    for name in ("model.pt", "config.json", "metrics.jsonl", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [int(json.loads(line)["step"]) for line in lines] == [5, STEPS]
    summaries = [line for line in str(ddp_run["stdout"]).splitlines() if '"model"' in line]
    assert len(summaries) == 1 and json.loads(summaries[0])["steps"] == STEPS


def test_sharded_inference_merged_equals_single(
    ddp_run: dict[str, object],
    small_cohort: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pathviewer.ml.device import torch_threads

    model = str(Path(str(ddp_run["run"])) / "model.pt")

    def infer(out: Path, *extra: str) -> int:
        args = ["infer", "--model", model, "--cohort", str(small_cohort), "--out", str(out)]
        args += ["--split", "all", "--device", "cpu", "--batch-size", "32", "--quiet", *extra]
        return main(args)

    single, shards, merged = tmp_path / "single", tmp_path / "shard", tmp_path / "merged"
    with torch_threads(1):
        assert infer(single) == 0
        for i in range(2):
            assert infer(Path(f"{shards}{i}"), "--shard", f"{i}/2") == 0
    shard0, shard1 = Path(f"{shards}0"), Path(f"{shards}1")
    assert 0 < len(_rows(shard0 / "slides.csv")) - 1 < len(_rows(single / "slides.csv")) - 1
    assert main(["infer", "merge", str(shard1), str(shard0), "--out", str(merged)]) == 0

    assert _rows(merged / "slides.csv") == _rows(single / "slides.csv")
    one, joined = _rows(single / "patches.csv"), _rows(merged / "patches.csv")
    assert joined[0] == one[0] and len(joined) == len(one)
    for a, b in zip(one[1:], joined[1:], strict=True):
        assert a[:5] == b[:5]
        assert abs(float(a[5]) - float(b[5])) <= 1e-6
    assert sorted(p.name for p in (merged / "heatmaps").iterdir()) == sorted(
        p.name for p in (single / "heatmaps").iterdir()
    )

    # Bad merges fail with one line naming the problem.
    capsys.readouterr()
    assert main(["infer", "merge", str(shard0), "--out", str(tmp_path / "m2")]) == 2
    assert "1/2 missing" in capsys.readouterr().err
    assert main(["infer", "merge", str(shard0), str(shard0), "--out", str(tmp_path / "m3")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["infer", "merge", str(single), str(shard1), "--out", str(tmp_path / "m4")]) == 2
    assert f"{single}: not a shard folder" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m4").exists()
