"""``load_model``: one loader for every entry point, and nothing it loads runs code."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import rtdetr
from rtdetr.cli import main
from rtdetr.errors import UserError
from rtdetr.infer import Detector
from rtdetr.weights import UnsafeCheckpointError, convert_checkpoint
from rtdetr.weights.formats import torch_load

SMALL = [
    "--model",
    "rtdetrv2_hgnetv2_n",
    "--imgsz",
    "96",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--ema-warmup",
    "2",
    "--set",
    "num_queries=30",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real training run (1 epoch on 8 tiny images): its folder, with last.pt and an image."""
    root = tmp_path_factory.mktemp("loader")
    assert main(["data", "synth", str(root / "data"), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    out = root / "run"
    assert main(["train", "--data", str(root / "data"), "--epochs", "1", "--out", str(out), *SMALL]) == 0
    return out, next((root / "data" / "val").iterdir())


class _Payload:
    """Unpickling this calls Path.write_text(marker, "pwned"): what a crafted .pt can do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "pwned")


@pytest.fixture
def evil(run, tmp_path):
    """A working training checkpoint with a code-running object slipped in, and its marker file."""
    state = torch_load(run[0] / "last.pt")  # ours loads safely (asserted below too)
    marker = tmp_path / "payload_ran"
    state["notes"] = _Payload(marker)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    return path, marker


def test_training_checkpoint_loads_with_weights_only(run, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state = torch_load(run[0] / "last.pt")
    # what the trainer stores beyond tensors (numpy RNG state, metrics) passes the allow-list
    assert calls == [True]
    assert isinstance(state["rng"]["numpy"][1], np.ndarray) and state["epoch"] == 1
    calls.clear()
    model = rtdetr.load_model(run[0] / "last.pt")
    assert calls == [True]
    assert model.config.decoder.num_queries == 30 and model.config.eval_spatial_size == (96, 96)
    assert model.class_names[:2] == ["circle", "square"]


@pytest.mark.parametrize("command", ["predict", "val", "export", "benchmark"])
def test_crafted_checkpoint_is_refused_by_every_command(evil, run, tmp_path, capsys, command):
    path, marker = evil
    data = run[1].parent.parent
    argv = {
        "predict": ["predict", str(run[1]), "--model", str(path), "--out", str(tmp_path / "p")],
        "val": ["val", "--model", str(path), "--data", str(data), "--workers", "0"],
        "export": ["export", "--model", str(path), "--out", str(tmp_path / "m.onnx")],
        "benchmark": ["benchmark", "--model", str(path), "--runs", "1"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the payload ran"
    assert "Traceback" not in err and err.startswith("error: refused to load") and "--trusted" in err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p").exists()


def test_crafted_checkpoint_is_refused_by_the_python_api(evil):
    path, marker = evil
    for load in (
        lambda: Detector.from_pretrained(path),
        lambda: rtdetr.load_model(path),
        lambda: rtdetr.build_model("rtdetrv2_hgnetv2_n", weights=str(path)),
    ):
        with pytest.raises(UnsafeCheckpointError, match="trusted=True"):
            load()
    assert not marker.exists()
    # the explicit opt-in really is what gates it
    model = rtdetr.load_model(path, trusted=True)
    assert marker.read_text() == "pwned" and model.config.decoder.num_queries == 30


def test_safetensors_file_is_a_model_file(run, tmp_path):
    last = run[0] / "last.pt"
    st = convert_checkpoint(last, tmp_path / "w.safetensors", to="safetensors")
    # safetensors holds tensors and names only: the config overrides of the run are passed again
    # fp32: the claim is about loading; bf16 ("auto" on AMX CPUs) reorders near-tied scores
    detector = Detector.from_pretrained(st, num_queries=30, imgsz=96, precision="fp32")
    reference = Detector.from_pretrained(last, precision="fp32")
    assert detector.class_names == reference.class_names
    ours, theirs = dict(detector.backend.module.named_parameters()), dict(reference.backend.module.named_parameters())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    (a,), (b,) = detector.predict(run[1], conf=0.0, max_det=5), reference.predict(run[1], conf=0.0, max_det=5)
    torch.testing.assert_close(a.boxes, b.boxes)
    torch.testing.assert_close(a.scores, b.scores)


def test_one_loader_for_names_and_paths(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="rtdetr.loader"):
        assert rtdetr.load_model("rtdetr_r18vd", num_classes=3).config.num_classes == 3
    assert "randomly initialized" in caplog.text and "--weights coco" in caplog.text
    with pytest.raises(UserError, match="did you mean rtdetr_r18vd"):
        rtdetr.load_model("rtdetr_r18")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        rtdetr.load_model(tmp_path / "missing.pt")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(UserError, match="ONNX"):
        rtdetr.load_model(onnx)
    junk = tmp_path / "junk.pth"
    torch.save({"w": torch.zeros(3)}, junk)
    with pytest.raises(UserError, match="not an RT-DETR checkpoint"):
        rtdetr.load_model(junk)


def test_released_weights_file_names_its_preset(tmp_path, monkeypatch):
    """A reference-layout .pth without config: the preset comes from its tensor shapes."""
    sd = rtdetr.build_model("rtdetr_r18vd", num_classes=5).state_dict()
    torch.save({"ema": {"module": sd}}, tmp_path / "r18.pth")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    model = rtdetr.load_model(tmp_path / "r18.pth")
    assert len(reads) == 1  # looked at once for a training config, then used as weights
    assert model.config.name == "rtdetr_r18vd" and model.config.num_classes == 5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
