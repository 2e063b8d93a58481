"""timm encoders (``timm:NAME`` + a local weights file) for NGSD and label refinement."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from pathviewer.cli import main
from pathviewer.core.errors import CheckpointError, TrainingError
from pathviewer.core.progress import run_job
from pathviewer.jobs import load_refinement_model, refine_run
from pathviewer.ml.config import NGSDConfig
from pathviewer.ml.encoders import read_weights_file
from pathviewer.ml.model_file import ModelFile
from pathviewer.ml.models import build_classifier, network_input_size
from pathviewer.ml.ngsd import train
from pathviewer.ml.refine_config import RefineConfig
from tests.test_ngsd import ROWS, make_png_cohort, tiny_config

# test_resnet: a 0.4 M parameter timm CNN whose pretrained config normalises with mean 0.5,
# std 0.5 (not ImageNet's), so the tests can tell whose statistics a network uses.
RESNET = "timm:test_resnet"
# A ViT of fixed input size: built for 32 px, it takes no other.
VIT = "timm:test_vit,img_size=32,dynamic_img_size=False"


def _timm_state(name: str, seed: int, **kwargs: object) -> dict[str, torch.Tensor]:
    """A timm model's state dict *with* its 7-class head, as released checkpoints have one."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=7, **kwargs)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same test_resnet weights as .safetensors (``module.`` keys) and .pt (nested)."""
    folder = tmp_path_factory.mktemp("weights")
    state = _timm_state("test_resnet", 1)
    files = {"safetensors": folder / "resnet.safetensors", "pt": folder / "resnet.pt"}
    save_file({f"module.{k}": v for k, v in state.items()}, files["safetensors"])
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}, files["pt"])
    vit = folder / "vit.pth"
    torch.save(_timm_state("test_vit", 2, img_size=32, dynamic_img_size=False), vit)
    files["vit"] = vit
    return files


@pytest.fixture(scope="module")
def png_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_png_cohort(tmp_path_factory.mktemp("timm_cohort"), ROWS)


def _encoder_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k[len("encoder.") :]: v for k, v in network.state_dict().items() if k.startswith("encoder.")
    }


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_weights_file_loads_into_the_encoder(weights: dict[str, Path], kind: str) -> None:
    network = build_classifier(2, RESNET, weights[kind], 32)
    saved = _timm_state("test_resnet", 1)
    encoder = _encoder_state(network)
    assert set(encoder) == {k for k in saved if not k.startswith("fc.")}  # the head is dropped
    assert all(torch.equal(encoder[k], saved[k]) for k in encoder)
    # Normalised with the encoder's own statistics, not ImageNet's.
    assert network.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert network.std.flatten().tolist() == [0.5, 0.5, 0.5]
    with torch.no_grad():
        assert network(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_fixed_size_encoder_takes_its_own_input_size(weights: dict[str, Path]) -> None:
    assert network_input_size(VIT, 64) == 32  # a ViT with fixed position embeddings
    assert network_input_size(RESNET, 48) == 48  # a CNN takes the setting's size
    assert network_input_size("resnet18", 48) == 48
    assert network_input_size("timm:test_vit,img_size=32", 48) == 48  # dynamic_img_size
    network = build_classifier(3, VIT, weights["vit"], 64)
    assert network.input_size == 32


def test_bad_encoders_and_weights_files_are_one_line_errors(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="unknown timm model 'no_such_net'"):
        build_classifier(2, "timm:no_such_net", None, 32)
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match=f"{missing}: weights file not found"):
        build_classifier(2, RESNET, missing, 32)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a safetensors file"):
        read_weights_file(garbage)
    pickle = tmp_path / "garbage.pt"
    pickle.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="garbage.pt: not a PyTorch weights file"):
        read_weights_file(pickle)
    # Weights of another network: counted, never a silent random init.
    with pytest.raises(CheckpointError) as caught:
        build_classifier(2, RESNET, weights["vit"], 32)
    message = str(caught.value)
    assert "vit.pth: not weights for timm:test_resnet" in message
    assert "missing" in message and "unexpected" in message and "\n" not in message
    # Only head keys may be left over: another extra key is an error.
    extra = tmp_path / "extra.safetensors"
    save_file({**_timm_state("test_resnet", 1), "projector.weight": torch.zeros(3)}, extra)
    with pytest.raises(CheckpointError, match="1 unexpected, e.g. 'projector.weight'"):
        build_classifier(2, RESNET, extra, 32)
    reshaped = tmp_path / "reshaped.safetensors"
    state = _timm_state("test_resnet", 1)
    state["conv1.0.weight"] = torch.zeros(1, 3, 3, 3)
    save_file(state, reshaped)
    with pytest.raises(CheckpointError, match="of another shape, e.g. 'conv1.0.weight'"):
        build_classifier(2, RESNET, reshaped, 32)


def test_encoder_settings_are_checked_without_torch() -> None:
    NGSDConfig(arch=RESNET).validate()
    NGSDConfig(arch="timm:vit_large_patch16_224,init_values=1e-5,dynamic_img_size=True").validate()
    RefineConfig(model=VIT).validate()
    for bad, match in [
        ("timm:", "give a timm model name"),
        ("timm:test_vit,img_size", "is not key=value"),
        ("timm:test_vit,num_classes=3", "num_classes is set by PathViewer"),
        ("timm:test_vit,act=gelu", "is not a number"),
        ("vgg16", "is not one of resnet18, resnet34, resnet50 or timm:NAME"),
    ]:
        with pytest.raises(TrainingError, match=match):
            NGSDConfig(arch=bad).validate()


def _train_ngsd(cohort: Path, out: Path, weights: Path, frozen: bool) -> tuple[float, object]:
    started = time.perf_counter()
    config = tiny_config(arch=RESNET, weights=str(weights), freeze_encoder=frozen, steps=4)
    result = run_job(train(cohort, out, config))
    return time.perf_counter() - started, result


@pytest.mark.parametrize("frozen", [False, True], ids=["trained", "frozen"])
def test_ngsd_trains_and_infers_with_a_timm_encoder(
    png_cohort: Path, weights: dict[str, Path], tmp_path: Path, frozen: bool, capsys
) -> None:
    kind = "pt" if frozen else "safetensors"
    seconds, result = _train_ngsd(png_cohort, tmp_path / "run", weights[kind], frozen)
    print(f"ngsd 4 steps, {'frozen' if frozen else 'trained'} encoder: {seconds:.2f} s")
    assert result.completed and result.steps == 4  # type: ignore[attr-defined]
    # The model file records the encoder; it rebuilds without the weights file.
    weights[kind].rename(weights[kind].with_suffix(".moved"))
    try:
        model = ModelFile.load(tmp_path / "run" / "model.pt")
    finally:
        weights[kind].with_suffix(".moved").rename(weights[kind])
    assert model.config.arch == RESNET and model.config.freeze_encoder is frozen
    assert model.network.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    record = model.provenance["encoder"]  # type: ignore[index]
    assert record["frozen"] is frozen and record["weights_file"]["name"] == weights[kind].name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["encoder"]["frozen"] is frozen and config["arch"] == RESNET
    # A frozen encoder keeps the file's weights; a trained one has moved away from them.
    saved = _timm_state("test_resnet", 1)
    encoder = _encoder_state(model.network)
    unchanged = all(torch.equal(encoder[k], saved[k]) for k in encoder)
    assert unchanged is frozen
    # The rebuilt network predicts what the trained weights in the file predict.
    raw = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    fresh = build_classifier(2, RESNET, None, 32)
    fresh.load_state_dict(raw["student"])
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), model.network(x), atol=1e-6)
    # pathviewer infer: nothing but the model file.
    code = main(
        ["infer", "--model", str(tmp_path / "run" / "model.pt"), "--cohort", str(png_cohort)]
        + ["--out", str(tmp_path / "pred"), "--device", "cpu", "--quiet"]
    )
    assert code == 0 and (tmp_path / "pred" / "slides.csv").is_file()


def test_ngsd_cli_bad_encoder_exits_2_before_writing(
    png_cohort: Path, weights: dict[str, Path], tmp_path: Path, capsys
) -> None:
    base = ["train", "ngsd", "--cohort", str(png_cohort), "--demo", "--steps", "2"]
    base += ["--patch-size", "128", "--read-level", "4", "--input-size", "32", "--quiet"]
    for extra, message in [
        (["--encoder", "timm:no_such_net"], "unknown timm model 'no_such_net'"),
        (
            ["--encoder", RESNET, "--weights", str(tmp_path / "none.pt")],
            "none.pt: weights file not found",
        ),
        (["--encoder", RESNET, "--weights", str(weights["vit"])], "vit.pth: not weights for"),
    ]:
        out = tmp_path / "run"
        assert main([*base, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (out / "model.pt").exists() and not (out / "config.json").exists()


@pytest.fixture(scope="module")
def label_table(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 patches of each class of the shared synthetic cohort."""
    folder = tmp_path_factory.mktemp("timm_labels")
    labels = folder / "labels.csv"
    assert (
        main(
            [
                "labels",
                "from-annotations",
                "--cohort",
                str(small_cohort),
                "--out",
                str(labels),
                "-q",
            ]
        )
        == 0
    )
    with open(labels, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row)
    table = folder / "tiny.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for group in by_class.values():
            for row in group[:16]:
                writer.writerow({**row, "slide": str((folder / row["slide"]).resolve())})
    return table


@pytest.mark.parametrize("frozen", [False, True], ids=["trained", "frozen"])
def test_refinement_trains_with_a_timm_encoder_and_rebuilds(
    label_table: Path, weights: dict[str, Path], tmp_path: Path, frozen: bool
) -> None:
    config = RefineConfig(
        model=VIT,
        weights=str(weights["vit"]),
        freeze_encoder=frozen,
        input_size=64,  # the ViT takes 32 px only: the run uses and records 32
        max_rounds=1,
        warmup=0,
        batch_size=16,
        device="cpu",
        val_fraction=0.25,
    )
    started = time.perf_counter()
    result = run_job(refine_run(tmp_path / "run", config, labels_csv=label_table))
    print(
        f"refine 1 round, {'frozen' if frozen else 'trained'} encoder: {time.perf_counter() - started:.2f} s"
    )
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["input_size"] == 32 and saved["model"] == VIT and saved["weights"]
    assert saved["encoder"]["frozen"] is frozen and saved["encoder"]["input_size"] == 32
    rebuilt = load_refinement_model(tmp_path / "run" / "model.pt")
    in_memory = result.model.eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), in_memory(x), atol=1e-5)
    head = _timm_state("test_vit", 2, img_size=32, dynamic_img_size=False)
    encoder = _encoder_state(rebuilt)
    assert all(torch.equal(encoder[k], head[k]) for k in encoder) is frozen


def test_noisy_cli_with_a_timm_encoder(
    label_table: Path, weights: dict[str, Path], tmp_path: Path, capsys
) -> None:
    def args(out: Path, weights_file: Path) -> list[str]:
        return [
            "train", "noisy", "--labels", str(label_table), "--out", str(out),
            "--encoder", RESNET, "--weights", str(weights_file), "--freeze-encoder",
            "--input-size", "32", "--epochs", "4", "--warmup", "1", "--lr", "0.01", "--device", "cpu", "-q",
        ]  # fmt: skip

    assert main(args(tmp_path / "run", weights["safetensors"])) == 0
    assert load_refinement_model(tmp_path / "run" / "model.pt").arch == RESNET
    capsys.readouterr()  # the first run's round warnings
    assert main(args(tmp_path / "bad", tmp_path / "gone.safetensors")) == 2
    err = capsys.readouterr().err.strip()
    assert "gone.safetensors: weights file not found" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "model.pt").exists()


def test_training_forms_take_a_timm_encoder_and_its_weights_file(qtbot) -> None:
    from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit

    from pathviewer.gui.training.settings_form import SettingsForm

    form = SettingsForm(NGSDConfig())
    qtbot.addWidget(form)
    arch = form.widgets["arch"]
    assert isinstance(arch, QComboBox) and arch.isEditable()
    assert isinstance(form.widgets["weights"], QLineEdit)
    assert isinstance(form.widgets["freeze_encoder"], QCheckBox)
    arch.setEditText("timm:")
    assert not form.is_valid and "give a timm model name" in form.message
    arch.setEditText(RESNET)
    form.widgets["freeze_encoder"].setChecked(True)
    assert form.is_valid
    assert form.value().arch == RESNET and form.value().freeze_encoder
    refine = SettingsForm(RefineConfig())
    qtbot.addWidget(refine)
    model = refine.widgets["model"]
    assert isinstance(model, QComboBox) and model.isEditable()
    model.setEditText(VIT)
    weights = refine.widgets["weights"]
    assert isinstance(weights, QLineEdit)
    weights.setText("/data/vit.safetensors")
    assert refine.is_valid
    assert (refine.value().model, refine.value().weights) == (VIT, "/data/vit.safetensors")
    # A choice of the list stays a plain pick.
    refine.set_value(RefineConfig(model="small"))
    assert model.currentText() == "small" and refine.value().model == "small"
