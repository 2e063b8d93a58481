"""The predictions folder (``pathviewer.core.predictions``): round trip, whole-folder
replacement under failures and kills, and one-line errors for every malformed file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathviewer.cli import main
from pathviewer.core import predictions as pr
from pathviewer.core.errors import PredictionsError
from pathviewer.core.heatmap import Heatmap, load_heatmap
from pathviewer.core.predictions import (
    SlideOutput,
    find_heatmap,
    heatmap_names,
    read_predictions,
    write_predictions,
)

TUMOUR = [[0.0, 0.0], [256.0, 0.0], [256.0, 256.0], [0.0, 256.0], [0.0, 0.0]]


def _slide(
    name: str, score: float, patches: list[tuple[int, int, float]], tag: str = ""
) -> SlideOutput:
    """A slide with square 128 px patches at ``(x, y)`` with probability ``p``."""
    boxes = np.array([(x, y, 128, 128) for x, y, _ in patches], np.int64).reshape(-1, 4)
    probs = np.array([p for _, _, p in patches], np.float64)
    heatmap = Heatmap.from_patches(name, (512, 512), 128, boxes[:, :2], probs, method=tag)
    return SlideOutput(name, score, boxes, probs, heatmap)


def _info(tag: str = "ngsd") -> dict[str, object]:
    return {"method": tag, "model": "run/model.pt", "model_info": "", "pooling": "max"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _cohort(tmp_path: Path) -> tuple[Path, Path]:
    """A cohort (p.png positive with a tumour square, n.png negative) and a valid folder."""
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [TUMOUR]},
                "properties": {"classification": {"name": "Tumor"}},
            }
        ],
    }
    (tmp_path / "p.geojson").write_text(json.dumps(geojson))
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("slide,label,split,annotations\np.png,1,test,p.geojson\nn.png,0,test,\n")
    pred = tmp_path / "pred"
    slides = [
        _slide("p.png", 0.9, [(0, 0, 0.9), (256, 256, 0.2)]),
        _slide("n.png", 0.1, [(0, 0, 0.1)]),
    ]
    write_predictions(pred, slides, _info())
    return cohort, pred


# --- Round trip and names ---------------------------------------------------------------------


def test_round_trip_and_heatmap_names(tmp_path: Path) -> None:
    slides = [
        _slide("a/x.tif", 0.75, [(0, 0, 0.25), (128, 0, 0.75)]),
        _slide("b/x.tif", 0.4999996, []),  # pred from the unrounded score: 0
        _slide("c.tif", 0.5, [(256, 384, 1.0)]),
    ]
    out = write_predictions(tmp_path / "pred", slides, {**_info(), "warnings": {"c.tif": ["w"]}})
    found = read_predictions(out, complete=True)
    assert [(r.slide, r.score, r.pred) for r in found.slides] == [
        ("a/x.tif", 0.75, 1),
        ("b/x.tif", 0.5, 0),
        ("c.tif", 0.5, 1),
    ]
    for s in slides:
        np.testing.assert_array_equal(found.patches[s.slide].boxes, s.boxes)
        np.testing.assert_allclose(found.patches[s.slide].probs, s.probs, atol=1e-6)
    assert found.info is not None
    assert (found.info.method, found.info.pooling, found.info.counts) == ("ngsd", "max", (3, 3))
    assert found.info.warnings == {"c.tif": ("w",)}
    # One file per slide; the second "x" gets its whole name, and each file holds its slide.
    assert heatmap_names([s.slide for s in slides]) == ["x.npz", "b__x.tif.npz", "c.npz"]
    for s in slides:
        assert load_heatmap(found.heatmaps[s.slide]).slide == s.slide
    # The viewer's look-up: by slides.csv's order, so "b/x.tif" never gets a/x.tif's heatmap.
    listed = [r.slide for r in found.slides]
    assert find_heatmap(out, "b/x.tif", None, listed) == out / "heatmaps" / "b__x.tif.npz"
    assert find_heatmap(out, "a/x.tif", None, listed) == out / "heatmaps" / "x.npz"
    assert find_heatmap(out, None, "/data/c.tif") == out / "heatmaps" / "c.npz"
    assert find_heatmap(out, "ghost.tif", "/data/ghost.tif", listed) is None


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    _, pred = _cohort(tmp_path)
    for name in ("slides.csv", "patches.csv", "prediction.json"):
        (pred / name).write_bytes(b"\xef\xbb\xbf" + (pred / name).read_bytes())
    found = read_predictions(pred, complete=True)
    assert [r.slide for r in found.slides] == ["p.png", "n.png"]


# --- Whole-folder replacement -----------------------------------------------------------------


def test_failed_write_leaves_the_old_folder_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pred"
    write_predictions(out, [_slide("a.tif", 0.2, [(0, 0, 0.2)]), _slide("b.tif", 0.3, [])], _info())
    before = _snapshot(out)
    calls = []
    real_save = pr.save_heatmap

    def dies_after_one(heatmap: Heatmap, path: Path) -> None:
        if calls:
            raise OSError(28, "No space left on device", str(path))
        calls.append(path)
        real_save(heatmap, path)

    monkeypatch.setattr(pr, "save_heatmap", dies_after_one)
    new = [_slide("a.tif", 0.9, [(0, 0, 0.9)], "v2"), _slide("b.tif", 0.8, [], "v2")]
    with pytest.raises(OSError, match="No space"):
        write_predictions(out, new, _info("v2"))
    assert calls  # the new folder was half written when it failed
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # no hidden leftovers


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace_swaps_and_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(pr, "_exchange", lambda a, b: False)
    out = tmp_path / "pred"
    write_predictions(out, [_slide("a.tif", 0.2, [])], _info("v1"))
    (out / "evaluation.json").write_text("{}")  # stale once the predictions change
    (out / "tile-cache").mkdir()
    (out / "tile-cache" / "index.npz").write_bytes(b"cache")
    write_predictions(out, [_slide("b.tif", 0.7, [(0, 0, 0.7)])], _info("v2"))
    found = read_predictions(out, complete=True)
    assert [r.slide for r in found.slides] == ["b.tif"] and found.info is not None
    assert found.info.method == "v2"
    assert sorted(p.name for p in out.iterdir()) == [
        "heatmaps",
        "patches.csv",
        "prediction.json",
        "slides.csv",
        "tile-cache",
    ]
    assert (out / "tile-cache" / "index.npz").read_bytes() == b"cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


def test_interrupted_two_renames_keep_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pr, "_exchange", lambda a, b: False)
    out = tmp_path / "pred"
    write_predictions(out, [_slide("a.tif", 0.2, [])], _info("v1"))
    before = _snapshot(out)
    real_rename = os.rename
    failed = []

    def second_fails(src: str, dst: str) -> None:
        if Path(dst) == out and not failed:  # the new folder's rename; the rollback then works
            failed.append(dst)
            raise OSError(5, "Input/output error", dst)
        real_rename(src, dst)

    monkeypatch.setattr(pr.os, "rename", second_fails)
    with pytest.raises(OSError):
        write_predictions(out, [_slide("b.tif", 0.7, [])], _info("v2"))
    monkeypatch.setattr(pr.os, "rename", real_rename)
    assert _snapshot(out) == before  # put back
    # A kill between the renames leaves the old folder beside the target: the reader says where.
    real_rename(out, tmp_path / ".pred.old-abcd1234")
    with pytest.raises(PredictionsError, match=r"left the previous one in \.pred\.old-abcd1234"):
        read_predictions(out)
    write_predictions(out, [_slide("c.tif", 0.7, [])], _info("v3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


KILL_CHILD = """
import sys
from pathlib import Path
import numpy as np
from pathviewer.core import predictions as pr
from pathviewer.core.heatmap import Heatmap
out = Path(sys.argv[1])
if sys.argv[2] == "two-renames":
    pr._exchange = lambda a, b: False
version = 1
print("ready", flush=True)
while True:
    if version > 1:
        print("wrote", flush=True)
    version += 1
    tag = f"v{version}"
    slides = []
    for i in range(40):
        boxes = np.array([[0, 0, 128, 128], [128, 0, 128, 128]], np.int64)
        probs = np.array([version % 100 / 100, 0.5])
        heatmap = Heatmap.from_patches(
            f"s{i}.tif", (512, 512), 128, boxes[:, :2], probs, method=tag
        )
        slides.append(pr.SlideOutput(f"s{i}.tif", version % 100 / 100, boxes, probs, heatmap))
    pr.write_predictions(out, slides, {"method": tag})
"""


def _consistent(out: Path) -> str:
    """The version of a complete, unmixed folder (fails on a mixed or incomplete one)."""
    found = read_predictions(out, complete=True)
    assert found.info is not None and len(found.slides) == 40
    tag = found.info.method
    score = int(tag[1:]) % 100 / 100
    assert all(r.score == pytest.approx(score) for r in found.slides)
    for path in found.heatmaps.values():
        assert load_heatmap(path).method == tag
    return tag


@pytest.mark.parametrize("mode", ["renameat2", "two-renames"])
def test_kill_at_any_moment_leaves_one_whole_folder(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "pred"
    slides = [_slide(f"s{i}.tif", 0.01, [(0, 0, 0.01), (128, 0, 0.5)], "v1") for i in range(40)]
    write_predictions(out, slides, {"method": "v1"})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    seen = set()
    # The last kill comes after a write finished, so some kill finds a new folder.
    for delay, after_a_write in [(0.05, 0), (0.13, 0), (0.21, 0), (0.34, 0), (0.02, 1)]:
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(out), mode],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        if after_a_write:
            assert child.stdout.readline().strip() == b"wrote"
        time.sleep(delay)
        assert child.poll() is None  # still writing
        child.send_signal(signal.SIGKILL)
        child.wait()
        if not out.exists():  # two renames, killed between them: the old folder is beside it
            (left,) = tmp_path.glob(".pred.old-*")
            os.rename(left, out)
        seen.add(_consistent(out))
    assert seen - {"v1"}  # some writes completed between the kills


def test_merge_uses_the_shared_reader_and_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathviewer.ml.distributed import merge_predictions, write_shard_manifest

    # Shard i holds positions i, i + 2, ... of the split; "b/x.tif" shares a stem with "a/x.tif".
    shard0, shard1 = tmp_path / "s0", tmp_path / "s1"
    write_predictions(
        shard0,
        [_slide("a/x.tif", 0.9, [(0, 0, 0.9)]), _slide("c.tif", 0.1, [])],
        {**_info(), "warnings": {"a/x.tif": ["stain unlike training"]}},
    )
    write_predictions(
        shard1,
        [_slide("b/x.tif", 0.4, [(128, 0, 0.4)])],
        {**_info(), "warnings": {"b/x.tif": ["mpp unlike training"]}},
    )
    for index, folder in enumerate((shard0, shard1)):
        write_shard_manifest(folder, index, 2, "cohort.csv", "test")
    merged = tmp_path / "merged"
    assert merge_predictions([shard1, shard0], merged) == {"shards": 2, "slides": 3, "patches": 2}
    found = read_predictions(merged, complete=True)
    assert [r.slide for r in found.slides] == ["a/x.tif", "b/x.tif", "c.tif"]
    assert found.info is not None and found.info.counts == (3, 2)
    # Every shard's warnings, not only the first's.
    assert found.info.warnings == {
        "a/x.tif": ("stain unlike training",),
        "b/x.tif": ("mpp unlike training",),
    }
    assert load_heatmap(found.heatmaps["b/x.tif"]).slide == "b/x.tif"
    # A damaged shard: one line naming its file and row.
    (shard1 / "patches.csv").write_text(
        "slide,x,y,width,height,prob\nb/x.tif,1e400,0,128,128,0.4\n"
    )
    assert main(["infer", "merge", str(shard0), str(shard1), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{shard1 / 'patches.csv'} row 2: x '1e400'" in err


# --- Refused outputs --------------------------------------------------------------------------


def test_infer_refuses_a_file_or_a_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort, _ = _cohort(tmp_path)
    target = tmp_path / "out.csv"
    target.write_text("keep me")
    argv = ["infer", "--model", str(tmp_path / "none.pt"), "--cohort", str(cohort), "--out"]
    assert main([*argv, str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"pathviewer: error: {target}: is a file, not a folder (give a folder for the predictions)"
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"weights")
    assert main([*argv, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{run}: not a predictions folder (it holds model.pt)" in err
    assert target.read_text() == "keep me" and (run / "model.pt").read_bytes() == b"weights"


# --- Malformed folders under `evaluate` -------------------------------------------------------


def _replace(name: str, old: bytes, new: bytes) -> Callable[[Path], None]:
    def mutate(pred: Path) -> None:
        data = (pred / name).read_bytes()
        assert old in data, (name, old)
        (pred / name).write_bytes(data.replace(old, new, 1))

    return mutate


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    def mutate(pred: Path) -> None:
        data = (pred / name).read_bytes()
        (pred / name).write_bytes(data[: len(data) - keep])

    return mutate


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def mutate(pred: Path) -> None:
        (pred / name).write_bytes(data)

    return mutate


MALFORMED = {
    "score high": (
        _replace("slides.csv", b"0.900000", b"high"),
        "slides.csv row 2: score 'high' is not a number",
    ),
    "score inf": (
        _replace("slides.csv", b"0.900000", b"inf"),
        "slides.csv row 2: score 'inf' is not a probability in [0, 1]",
    ),
    "short patches row": (
        _truncate("patches.csv", len(b"28,128,0.100000\n")),
        "patches.csv row 4: 4 fields, the header has 6 (truncated or damaged file)",
    ),
    "long slides row": (
        _replace("slides.csv", b"n.png,0.100000,0", b"n.png,0.100000,0,7"),
        "slides.csv row 3: 4 fields, the header has 3",
    ),
    "lost last row": (
        _truncate("patches.csv", len(b"n.png,0,0,128,128,0.100000\n")),
        "patches.csv: 2 patch rows, but prediction.json records 3 (truncated or mixed folder)",
    ),
    "bad json": (
        _write("prediction.json", b'{"method": "ngsd",\n  oops}'),
        "prediction.json line 2: not valid JSON (Expecting property name enclosed in double quotes)",
    ),
    "json nested deep": (
        _write("prediction.json", b"[" * 100_000),
        "prediction.json: JSON nested too deeply",
    ),
    "json not object": (_write("prediction.json", b"[1]"), "prediction.json: not a JSON object"),
    "json method list": (
        _write("prediction.json", b'{"method": [1]}'),
        "prediction.json: 'method' must be text, not list",
    ),
    "latin-1 byte": (
        _replace("patches.csv", b"n.png,0,0", "né.png,0,0".encode("latin-1")),
        "patches.csv row 4: not UTF-8 text (byte 0xe9)",
    ),
    "nul byte": (
        _replace("patches.csv", b"n.png,0,0", b"n\x00.png,0,0"),
        "patches.csv row 4: slide 'n\\x00.png' is not in slides.csv",
    ),
    "x 512.5": (
        _replace("patches.csv", b"p.png,0,0", b"p.png,512.5,0"),
        "patches.csv row 2: x '512.5' is not a pixel position (a whole number from 0)",
    ),
    "x inf": (
        _replace("patches.csv", b"p.png,0,0", b"p.png,inf,0"),
        "patches.csv row 2: x 'inf' is not a pixel position",
    ),
    "y 1e400": (
        _replace("patches.csv", b"p.png,0,0", b"p.png,0,1e400"),
        "patches.csv row 2: y '1e400' is not a pixel position",
    ),
    "x nan": (
        _replace("patches.csv", b"p.png,0,0", b"p.png,nan,0"),
        "patches.csv row 2: x 'nan' is not a pixel position",
    ),
    "x 5000 digits": (
        _replace("patches.csv", b"p.png,0,0", b"p.png," + b"9" * 5000 + b",0"),
        "patches.csv row 2: x '99999",
    ),
    "width 0": (
        _replace("patches.csv", b"p.png,0,0,128", b"p.png,0,0,0"),
        "patches.csv row 2: width '0' is not a patch size (a whole number from 1)",
    ),
    "prob nan": (
        _replace("patches.csv", b"0.900000", b"nan"),
        "patches.csv row 2: prob 'nan' is not a probability in [0, 1]",
    ),
    "pred 2": (
        _replace("slides.csv", b"0.900000,1", b"0.900000,2"),
        "slides.csv row 2: pred '2' is not 0 or 1",
    ),
    "missing columns": (
        _replace("patches.csv", b"height,prob", b"h,p"),
        "patches.csv: missing column(s) height, prob",
    ),
    "empty slides.csv": (_write("slides.csv", b""), "slides.csv: empty file (no header row)"),
    "slide twice": (
        _replace("slides.csv", b"n.png,0.100000", b"p.png,0.100000"),
        "slides.csv row 3: slide 'p.png' listed twice (also row 2)",
    ),
    "patch of unlisted slide": (
        _replace("patches.csv", b"n.png,0,0", b"q.png,0,0"),
        "patches.csv row 4: slide 'q.png' is not in slides.csv",
    ),
    "no patches.csv": (
        lambda pred: (pred / "patches.csv").unlink(),
        "patches.csv: predictions file not found",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_evaluate_malformed_folder_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    cohort, pred = _cohort(tmp_path)
    assert main(["evaluate", "--cohort", str(cohort), "--pred", str(pred)]) == 0
    capsys.readouterr()
    (pred / "evaluation.json").unlink()
    mutate, expected = MALFORMED[case]
    mutate(pred)
    assert main(["evaluate", "--cohort", str(cohort), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"pathviewer: error: {pred}{os.sep}"), err
    assert expected in err, err
    assert len(err) < 300


def test_evaluate_accepts_a_bom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort, pred = _cohort(tmp_path)
    for name in ("slides.csv", "patches.csv"):
        (pred / name).write_bytes(b"\xef\xbb\xbf" + (pred / name).read_bytes())
    assert main(["evaluate", "--cohort", str(cohort), "--pred", str(pred)]) == 0
    result = json.loads((pred / "evaluation.json").read_text())
    assert result["method"] == "ngsd" and result["n_patches"] == 3
    assert result["instance_auc"] == pytest.approx(1.0) and result["bag_accuracy"] == 1.0


# --- Properties -------------------------------------------------------------------------------

_VALID: dict[str, bytes] = {}


def _valid_files() -> dict[str, bytes]:
    """The files of one valid folder (written once, then copied for every example)."""
    if not _VALID:
        with tempfile.TemporaryDirectory() as folder:
            slides = [
                _slide("a/p.png", 0.9, [(0, 0, 0.9), (128, 128, 0.25)]),
                _slide("b/p.png", 0.2, [(256, 0, 0.2)]),
                _slide("n.png", 0.05, []),
            ]
            out = write_predictions(Path(folder) / "pred", slides, _info())
            _VALID.update(_snapshot(out))
    return _VALID


TRICKY = ["", "high", "512.5", "inf", "-inf", "1e400", "nan", "-1", "1_0", "\u0663", "0x10",
          "9" * 5000, '"', "\x00", "\ufeff", "é", "1.5", "0", "1", "2147483648", "  7 "]  # fmt: skip


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    files = _valid_files()
    name = draw(st.sampled_from(["slides.csv", "patches.csv", "prediction.json"]))
    data = files[name]
    kind = draw(st.sampled_from(["cell", "bytes", "truncate", "delete", "swap-lines"]))
    if kind == "cell" and name != "prediction.json":
        lines = data.decode().split("\n")
        row = draw(st.integers(0, len(lines) - 2))
        cells = lines[row].split(",")
        column = draw(st.integers(0, len(cells) - 1))
        cells[column] = draw(st.sampled_from(TRICKY) | st.text(max_size=8))
        lines[row] = ",".join(cells)
        return name, "\n".join(lines).encode("utf-8", "surrogatepass")
    position = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return name, data[:position]
    if kind == "delete":
        return name, data[:position] + data[position + draw(st.integers(1, 20)) :]
    if kind == "swap-lines":
        lines = data.split(b"\n")
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        return name, b"\n".join(lines)
    return name, data[:position] + draw(st.binary(min_size=1, max_size=6)) + data[position:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_reader_on_mutated_folder_returns_valid_or_one_line_error(
    mutation: tuple[str, bytes],
) -> None:
    name, data = mutation
    with tempfile.TemporaryDirectory() as folder:
        pred = Path(folder) / "pred"
        for relative, content in _valid_files().items():
            (pred / relative).parent.mkdir(parents=True, exist_ok=True)
            (pred / relative).write_bytes(content)
        (pred / name).write_bytes(data)
        try:
            found = read_predictions(pred, complete=True)
        except PredictionsError as error:
            message = str(error)
            assert "\n" not in message and "\r" not in message
            assert message.startswith(str(pred)), message
            return
        listed = {r.slide for r in found.slides}
        assert len(listed) == len(found.slides) and all(listed)
        assert set(found.patches) == listed and set(found.heatmaps) == listed
        for row in found.slides:
            assert 0.0 <= row.score <= 1.0 and row.pred in (0, 1)
        for rows in found.patches.values():
            assert rows.boxes.shape == (len(rows.probs), 4) and rows.boxes.dtype == np.int64
            assert np.all(rows.boxes >= 0) and np.all(rows.boxes[:, 2:] >= 1)
            assert np.all((rows.probs >= 0) & (rows.probs <= 1))


_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=12
).filter(lambda s: s == s.strip())
_probs = st.floats(0.0, 1.0)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(_names, _probs, st.lists(st.tuples(st.integers(0, 4000), _probs), max_size=4)),
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_write_then_read_gives_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory, slides: list[tuple[str, float, list]]
) -> None:
    outputs = [
        SlideOutput(
            name,
            score,
            np.array([(x, 2 * x, 128, 64) for x, _ in patches], np.int64).reshape(-1, 4),
            np.array([p for _, p in patches], np.float64),
            Heatmap(name, (64, 64), (0, 0), (8, 8), np.zeros((8, 8), np.float32)),
        )
        for name, score, patches in slides
    ]
    out = write_predictions(tmp_path_factory.mktemp("rt") / "pred", outputs, _info())
    found = read_predictions(out, complete=True)
    assert [r.slide for r in found.slides] == [s.slide for s in outputs]
    for row, s in zip(found.slides, outputs, strict=True):
        assert row.score == pytest.approx(s.score, abs=6e-7)
        assert row.pred == int(s.score >= 0.5)
        np.testing.assert_array_equal(found.patches[s.slide].boxes, s.boxes)
        np.testing.assert_allclose(found.patches[s.slide].probs, s.probs, atol=5e-7)
        assert load_heatmap(found.heatmaps[s.slide]).slide == s.slide


def test_a_slide_name_too_long_for_the_file_system_is_a_one_line_error(tmp_path: Path) -> None:
    # Found by the mutation test: Path.is_file raises ENAMETOOLONG instead of returning False.
    pred = tmp_path / "pred"
    for relative, content in _valid_files().items():
        (pred / relative).parent.mkdir(parents=True, exist_ok=True)
        (pred / relative).write_bytes(content)
    long_name = "9" * 5000
    slides = f"slide,score,pred\na/p.png,0.900000,1\nb/p.png,0.200000,0\n{long_name},0.050000,0\n"
    (pred / "slides.csv").write_text(slides)
    with pytest.raises(PredictionsError) as caught:
        read_predictions(pred, complete=True)
    message = str(caught.value)
    assert message.startswith(str(pred)) and "\n" not in message and len(message) < 400
