"""convert_checkpoint: every target, preset checks, names carried along."""

from __future__ import annotations

import json

import pytest
import torch

import rtdetr
from rtdetr.weights import WeightsMismatchError, convert_checkpoint, load_weights, read_checkpoint


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    sd = rtdetr.build_model("rtdetr_r18vd").state_dict()
    path = tmp_path_factory.mktemp("src") / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"  # a release file's name
    torch.save({"ema": {"module": sd}}, path)
    return path, sd


def test_reference_to_safetensors_and_back(r18_file, tmp_path):
    path, sd = r18_file
    st = convert_checkpoint(path, tmp_path / "w.safetensors", to="safetensors")
    ckpt = read_checkpoint(st)
    # the release file name identified COCO weights: names and preset travel in the metadata
    assert (ckpt.format, ckpt.container, ckpt.model_name) == ("rtdetr", "safetensors", "rtdetr_r18vd")
    assert ckpt.class_names[0] == "person" and len(ckpt.class_names) == 80
    assert set(ckpt.state_dict) == set(sd) and all(torch.equal(ckpt.state_dict[k], v) for k, v in sd.items())
    ref = convert_checkpoint(st, tmp_path / "w.pth", to="reference")
    state = torch.load(ref)
    assert set(state) == {"model", "class_names"} and list(state["model"]) == list(sd)
    model = rtdetr.build_model("rtdetr_r18vd")
    assert load_weights(model, ref).format == "rtdetr" and model.class_names[0] == "person"


def test_hf_single_files_and_folder(r18_file, tmp_path):
    path, sd = r18_file
    single = convert_checkpoint(path, tmp_path / "hf.safetensors", to="hf", hf_naming="v5")
    assert read_checkpoint(single).hf_naming == "v5"
    binary = convert_checkpoint(path, tmp_path / "hf.bin", to="hf")
    assert read_checkpoint(binary).hf_naming == "v4"
    folder = convert_checkpoint(path, tmp_path / "hf_dir", to="hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "rt_detr" and config["decoder_layers"] == 3 and config["id2label"]["0"] == "person"
    for src in (single, binary, folder):
        ckpt = read_checkpoint(src)
        assert all(torch.equal(ckpt.state_dict[k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


def test_preset_is_checked_and_targets_validated(r18_file, tmp_path):
    path, _ = r18_file
    with pytest.raises(WeightsMismatchError, match="do not match rtdetr_r34vd"):
        convert_checkpoint(path, tmp_path / "x.pth", to="reference", model_name="rtdetr_r34vd")
    with pytest.raises(ValueError, match="to must be"):
        convert_checkpoint(path, tmp_path / "x.pth", to="onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RT-DETRv2"):
        v2 = rtdetr.build_model("rtdetrv2_r18vd").state_dict()
        torch.save(v2, tmp_path / "v2.pth")
        convert_checkpoint(tmp_path / "v2.pth", tmp_path / "v2_hf", to="hf", model_name="rtdetrv2_r18vd")
