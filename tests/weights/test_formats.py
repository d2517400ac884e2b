"""Format detection, class names, head re-initialization and clear errors for bad files."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

import rtdetr
from rtdetr.train.checkpoint import capture_rng_state, to_plain
from rtdetr.weights import WeightsFormatError, WeightsMismatchError, load_weights, read_checkpoint

N_CLS = 80


@pytest.fixture(scope="module")
def model():
    """One R18 shared by the tests; each writes its own distinct values before loading them."""
    return rtdetr.build_model("rtdetr_r18vd")


_offset = iter(range(1, 1000))


def _weights(model) -> dict[str, torch.Tensor]:
    """The model's state dict shifted by a value no earlier test used (so a load is visible)."""
    k = next(_offset)
    return {key: v + k for key, v in model.state_dict().items()}


def _same(model, sd, skip=()) -> bool:
    state = model.state_dict()
    return all(torch.equal(state[k], v) for k, v in sd.items() if k not in skip)


@pytest.mark.parametrize(
    "layout, fmt, state_key",
    [
        ("bare", "state_dict", None),
        ("ddp", "state_dict", None),
        ("model", "reference", "model"),
        ("ema", "reference", "ema.module"),
        ("training", "rtdetr", "model"),
    ],
)
def test_layouts_are_detected_and_load(model, tmp_path, layout, fmt, state_key):
    sd = _weights(model)
    model.class_names = None
    names = [f"n{i}" for i in range(N_CLS)]
    obj = {
        "bare": sd,
        "ddp": {f"module.{k}": v for k, v in sd.items()},
        "model": {"model": sd, "last_epoch": 3},
        "ema": {"ema": {"module": sd, "updates": 5}, "model": {k: v + 1 for k, v in sd.items()}},
        # this package's training checkpoints: EMA off, RNG state with numpy arrays, config dict
        "training": {
            "model": sd,
            "ema": None,
            "rng": capture_rng_state(),
            "class_names": names,
            "config": to_plain(rtdetr.get_config("rtdetr_r18vd")),
            "epoch": 2,
        },
    }[layout]
    torch.save(obj, tmp_path / "w.pth")
    report = load_weights(model, tmp_path / "w.pth")
    assert (report.format, report.state_key) == (fmt, state_key)
    assert _same(model, sd)
    assert model.class_names == (names if layout == "training" else None)
    if layout == "training":
        assert read_checkpoint(tmp_path / "w.pth").model_name == "rtdetr_r18vd"


def test_python_objects_need_trusted(model, tmp_path):
    sd = _weights(model)
    torch.save({"model": sd, "args": argparse.Namespace(lr=1.0)}, tmp_path / "w.pth")
    with pytest.raises(WeightsFormatError, match="trusted=True") as info:
        load_weights(model, tmp_path / "w.pth")
    assert "argparse.Namespace" in str(info.value) and info.value.__cause__ is None
    assert load_weights(model, tmp_path / "w.pth", trusted=True).format == "reference"
    assert _same(model, sd)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("notes.txt", b"hello, not weights", "not a PyTorch checkpoint"),
        ("broken.safetensors", b"\x00\x01garbage", "not a valid safetensors file"),
        ("list.pth", None, "expected a dict-like checkpoint"),
        ("resnet.pth", None, "not an RT-DETR checkpoint"),
        ("optim.pth", None, "no state dict found"),
    ],
)
def test_bad_files_give_one_clear_error(model, tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    elif name == "list.pth":
        torch.save([torch.zeros(1)], path)
    elif name == "resnet.pth":
        torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1), "fc.weight": torch.zeros(2, 2)}, path)
    else:
        torch.save({"optimizer": {"state": {}}, "epoch": 1}, path)
    with pytest.raises(WeightsFormatError, match=match) as info:
        load_weights(model, path)
    assert info.value.__cause__ is None


def test_missing_paths_and_folders(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="tags for rtdetr_r18vd: 'coco', 'coco\\+o365'"):
        load_weights(model, tmp_path / "nope.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsFormatError, match="no weights in folder"):
        load_weights(model, tmp_path / "empty")
    with pytest.raises(ValueError, match="no weights tagged 'coco\\+o365' for 'rtdetr_r34vd'"):
        load_weights(rtdetr.build_model("rtdetr_r34vd"), "coco+o365")


def test_wrong_architecture_lists_keys_and_names_the_preset(model, tmp_path):
    torch.save({"model": model.state_dict()}, tmp_path / "r18.pth")
    model = rtdetr.build_model("rtdetr_r34vd")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_weights(model, tmp_path / "r18.pth")
    msg = str(info.value)
    assert "missing" in msg and "backbone.res_layers.0.blocks.2." in msg  # R34 has 3 blocks in stage 0
    assert "looks like rtdetr_r18vd" in msg and len(msg) < 2000
    assert info.value.missing_keys and info.value.__cause__ is None
    assert _same(model, before)  # nothing was loaded


def test_strict_false_reports_and_strict_failure_leaves_the_model_untouched(model, tmp_path):
    sd = _weights(model)
    partial = {k: v for k, v in sd.items() if not k.startswith("decoder.query_pos_head.")}
    partial["decoder.extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="unexpected: decoder.extra.weight"):
        load_weights(model, tmp_path / "partial.pth")
    assert _same(model, before)
    report = load_weights(model, tmp_path / "partial.pth", strict=False)
    assert report.missing_keys == [k for k in sd if k.startswith("decoder.query_pos_head.")]
    assert report.unexpected_keys == ["decoder.extra.weight"]
    assert _same(model, {k: v for k, v in partial.items() if k in sd})


def test_class_count_change_reinitializes_only_the_heads(model, tmp_path):
    sd = _weights(model)
    torch.save({"model": sd, "class_names": [f"n{i}" for i in range(N_CLS)]}, tmp_path / "coco.pth")
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3)
    with pytest.raises(WeightsMismatchError, match="allow_head_mismatch=True") as info:
        load_weights(model, tmp_path / "coco.pth")
    assert "checkpoint 80 classes, model 3" in str(info.value)

    model.class_names = ["a", "b", "c"]
    report = load_weights(model, tmp_path / "coco.pth", allow_head_mismatch=True)
    heads = {"decoder.denoising_class_embed.weight", "decoder.enc_score_head.weight", "decoder.enc_score_head.bias"}
    heads |= {f"decoder.dec_score_head.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert set(report.reinitialized_keys) == heads
    assert _same(model, sd, skip=heads)
    state = model.state_dict()
    assert state["decoder.dec_score_head.0.weight"].shape == (3, 256)
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(state["decoder.enc_score_head.bias"], torch.full((3,), prior))
    assert torch.equal(state["decoder.denoising_class_embed.weight"][3], torch.zeros(256))  # padding row
    assert model.class_names == ["a", "b", "c"]  # 80 checkpoint names do not apply to 3 new heads
