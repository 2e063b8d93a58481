"""model.pt knows where it came from; inference warns on slides unlike the training slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathviewer.cli import main
from pathviewer.core.heatmap import load_heatmap
from pathviewer.core.progress import run_job
from pathviewer.core.tiling import read_patch
from pathviewer.ml import checkpoint as ckpt
from pathviewer.ml.inference import describe_model, model_normalizer
from pathviewer.ml.ngsd import prepare_training_data, train
from pathviewer.ml.provenance import slide_warnings
from tests.test_ngsd import tiny_config


@pytest.fixture(scope="module")
def normalised_run(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prov") / "run"
    cfg = tiny_config(patch_size=256, read_downsample=4.0, steps=2, stain_norm="macenko")
    run_job(train(small_cohort, out, cfg))
    return out


def test_model_records_its_provenance(normalised_run: Path) -> None:
    data = ckpt.load_model_file(normalised_run / "model.pt")
    prov = data["provenance"]
    assert prov["level0_mpp"] == pytest.approx(0.5)
    assert prov["mpp"] == pytest.approx(2.0) and prov["magnification"] == pytest.approx(5.0)
    assert prov["patch_size"] == 256 and prov["read_downsample"] == 4.0
    assert len(prov["cohort_fingerprint"]) == 16 and prov["training_slides"]
    lo, hi = prov["stain_range"]["h"]
    assert 0 < lo <= hi
    assert prov["stain_norm"]["method"] == "macenko"
    assert "5x" in describe_model(normalised_run / "model.pt", data)


def test_training_and_inference_read_the_same_normalised_pixels(
    small_cohort: Path, normalised_run: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(patch_size=256, read_downsample=4.0, steps=2, stain_norm="macenko")
    data = run_job(prepare_training_data(small_cohort, cfg, tmp_path))
    saved = model_normalizer(ckpt.load_model_file(normalised_run / "model.pt"))
    assert saved is not None and saved == data.normalizer
    tiled = data.store.slides[0]
    x, y = tiled.index.coords[0]
    from pathviewer.core.slide import open_slide

    slide = open_slide(tiled.entry.path)
    raw = read_patch(slide, int(x), int(y), 256, 4.0)
    slide.close()
    np.testing.assert_array_equal(data.store.get(0), saved.transform(raw))
    assert not np.array_equal(data.store.get(0), raw)


def test_slide_warnings_rules() -> None:
    prov = {"level0_mpp": 0.5, "stain_range": {"h": [0.3, 0.4], "e": [0.2, 0.3]}}
    assert slide_warnings(None, "s", 0.25, None) == []
    assert slide_warnings(prov, "s", 0.52, {"mean_h": 0.35, "mean_e": 0.25}) == []
    mpp = slide_warnings(prov, "s.svs", 0.25, None)
    assert len(mpp) == 1 and "0.250 um/px" in mpp[0] and "s.svs" in mpp[0]
    stain = slide_warnings(prov, "s", 0.5, {"mean_h": 0.9, "mean_e": 0.25})
    assert len(stain) == 1 and "haematoxylin" in stain[0]
    assert "no resolution" in slide_warnings(prov, "s", None, None)[0]


def test_infer_warns_when_the_slide_is_unlike_training(
    small_cohort: Path, normalised_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ckpt.load_model_file(normalised_run / "model.pt")
    data["provenance"]["level0_mpp"] = 0.25  # pretend the model was trained at 40x
    data["degenerate"], data["guard"] = True, ["positive and negative slides score alike"]
    model = tmp_path / "run" / "model.pt"
    ckpt.save_model(model, data)
    out = tmp_path / "pred"
    assert main(["infer", "--model", str(model), "--cohort", str(small_cohort), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning" in err and "0.500 um/px" in err and "degenerate" in err
    heatmap = load_heatmap(next((out / "heatmaps").glob("*.npz")))
    assert any("um/px" in w for w in heatmap.warnings)
    assert "run run" in heatmap.model and "DEGENERATE" in heatmap.model


def test_macenko_without_usable_tissue_is_one_named_error(tmp_path: Path) -> None:
    from pathviewer.core.errors import TrainingError
    from tests.test_ngsd import make_png_cohort

    cohort = make_png_cohort(tmp_path / "c", [("p1", 1, "train"), ("n1", 0, "train")])
    rng = np.random.default_rng(0)
    vector = np.array([0.65, 0.70, 0.29])  # one stain only: nothing to separate it from
    for name in ("p1", "n1"):
        amount = rng.uniform(0.2, 1.2, (768, 768, 1))
        rgb = 255 * np.power(10.0, -amount * vector)
        Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / "c" / f"{name}.png")
    cfg = tiny_config(stain_norm="macenko", threshold=0.0)
    with pytest.raises(TrainingError, match="cohort.csv: cannot fit Macenko"):
        run_job(prepare_training_data(cohort, cfg, tmp_path / "run"))
