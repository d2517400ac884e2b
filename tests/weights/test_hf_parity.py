"""Against transformers' RTDetrForObjectDetection: configs, loading, float64 outputs, conversion.

Findings (float64, random weights, 256x256): with transformers' defaults its outputs differ
from ours (= the reference) by ~1e-8 (R18) to ~2e-7 (R50), from two dtype choices:
transformers computes the AIFI sin-cos position embedding in float64 and, with
``anchor_image_size=None`` (the published configs), the anchors in the input dtype, while
the reference computes both in float32 even in a float64 model. With those two aligned
(float32 anchors via ``anchor_image_size``, the reference position embedding) the outputs
agree to ~1e-14: the rest of the network is the same computation.
"""

from __future__ import annotations

import pytest
import torch

import rtdetr
from rtdetr.config import get_config
from rtdetr.data.coco_categories import COCO_CLASS_NAMES
from rtdetr.nn.encoder import sincos_position_embedding_2d
from rtdetr.weights import convert_checkpoint, hf_config_dict, load_weights, read_checkpoint, to_hf_state_dict

from .helpers import HF_PRESET_FIELDS, hf_reference_config, randomize_

transformers = pytest.importorskip("transformers")
hf_modeling = pytest.importorskip("transformers.models.rt_detr.modeling_rt_detr")

PRESETS = ["rtdetr_r18vd", "rtdetr_r50vd"]
SIZE = 256


def _hf_model(config):
    """A transformers model without its (slow) weight init; randomize_ fills every tensor."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return transformers.RTDetrForObjectDetection(config)


@pytest.fixture(scope="module", params=PRESETS)
def hf_checkpoint(request, tmp_path_factory):
    """(preset, randomized transformers model in eval mode, its save_pretrained folder)."""
    name = request.param
    model = randomize_(_hf_model(hf_reference_config(name, id2label=dict(enumerate(COCO_CLASS_NAMES)))), seed=1)
    path = tmp_path_factory.mktemp(f"hf_{name}")
    model.save_pretrained(path)
    return name, model.eval(), path


@pytest.mark.parametrize("name", PRESETS)
def test_hf_config_is_the_preset(name):
    ours = hf_config_dict(get_config(name), COCO_CLASS_NAMES)
    spec = HF_PRESET_FIELDS[name]
    for key, value in spec["backbone"].items():
        assert ours["backbone_config"][key] == value, key
    for key in ("encoder_in_channels", "hidden_expansion", "decoder_layers", "freeze_backbone_batch_norms"):
        assert ours[key] == spec[key], key
    # transformers builds the same tensors from our config.json dict as from the hand-written
    # config, and they are exactly our tensors (meta device: shapes only)
    cfg = transformers.RTDetrConfig(**{k: v for k, v in ours.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        built = transformers.RTDetrForObjectDetection(cfg).state_dict()
        expected = transformers.RTDetrForObjectDetection(hf_reference_config(name)).state_dict()
    shapes = lambda sd: {k: v.shape for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # noqa: E731
    assert shapes(built) == shapes(expected)
    assert shapes(built) == shapes(to_hf_state_dict(rtdetr.build_model(name).state_dict(), naming="v5"))


def test_hf_folder_loads_and_matches_transformers(hf_checkpoint, monkeypatch):
    name, hf, path = hf_checkpoint
    model = rtdetr.build_model(name, weights=str(path))  # float32 values: .double() below is exact
    assert model.class_names == COCO_CLASS_NAMES
    ours = model.double().eval()
    hf = hf.double()
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        out = ours(x)
        ref = hf(pixel_values=x)
    # transformers as published (float64 position embedding and anchors): see the module docstring
    torch.testing.assert_close(ref.logits, out.pred_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.pred_boxes, out.pred_boxes, atol=1e-6, rtol=0)

    # the same computation once both use the reference's float32 anchors and position embedding
    def reference_pos_embed(self, width, height, device, dtype):
        pos = sincos_position_embedding_2d(int(height), int(width), self.embed_dim, float(self.temperature))
        return pos.to(device, dtype)

    monkeypatch.setattr(hf_modeling.RTDetrSinePositionEmbedding, "forward", reference_pos_embed)
    monkeypatch.setattr(hf.config, "anchor_image_size", [SIZE, SIZE])
    hf.model.anchors, hf.model.valid_mask = hf.model.generate_anchors(dtype=torch.float32)
    with torch.no_grad():
        aligned = hf(pixel_values=x)
    torch.testing.assert_close(aligned.logits, out.pred_logits, atol=1e-12, rtol=0)
    torch.testing.assert_close(aligned.pred_boxes, out.pred_boxes, atol=1e-12, rtol=0)


def test_hf_weight_files_in_both_spellings(hf_checkpoint, tmp_path):
    name, _, path = hf_checkpoint
    ckpt = read_checkpoint(path / "model.safetensors")  # save_pretrained writes the v4 spelling
    assert (ckpt.format, ckpt.container, ckpt.hf_naming) == ("hf", "safetensors", "v4")
    assert ckpt.class_names == COCO_CLASS_NAMES  # from the config.json next to the file
    # transformers 5 module names, as a pytorch_model.bin without config
    torch.save(to_hf_state_dict(ckpt.state_dict, naming="v5"), tmp_path / "pytorch_model.bin")
    model = rtdetr.build_model(name)
    report = load_weights(model, tmp_path / "pytorch_model.bin")
    assert (report.format, report.container, report.class_names) == ("hf", "torch", None)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ckpt.state_dict.items())


def test_conversion_round_trips_and_transformers_loads_it(tmp_path):
    name = "rtdetr_r18vd"
    sd = randomize_(rtdetr.build_model(name), seed=5).state_dict()
    src = tmp_path / "ours.pth"
    torch.save({"model": sd, "class_names": [f"c{i}" for i in range(80)]}, src)
    hf_dir = convert_checkpoint(src, tmp_path / "hf", to="hf")  # v4 spelling by default
    hf, info = transformers.RTDetrForObjectDetection.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label[3] == "c3"
    expected = to_hf_state_dict(sd, naming="v5")
    assert all(torch.equal(hf.state_dict()[k], v) for k, v in expected.items())
    hf.load_state_dict(expected, strict=True)  # the v5 spelling is exactly transformers' module naming
    # back to ours: the same tensors, in the reference key order
    back = torch.load(convert_checkpoint(hf_dir, tmp_path / "back.pth", to="reference"))
    assert list(back["model"]) == list(sd)
    assert all(torch.equal(back["model"][k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert back["class_names"][3] == "c3"


def test_class_count_and_names_come_with_hf_weights(tmp_path):
    """No num_classes given: the 2-label folder builds a 2-class model that matches transformers."""
    config = hf_reference_config("rtdetr_r18vd")
    config.num_labels = 2
    config.id2label, config.label2id = {0: "cat", 1: "dog"}, {"cat": 0, "dog": 1}
    hf = randomize_(_hf_model(config), seed=2).eval()
    hf.save_pretrained(tmp_path / "two")

    model = rtdetr.build_model("rtdetr_r18vd", weights=str(tmp_path / "two"))
    assert model.config.num_classes == 2 and model.class_names == ["cat", "dog"]
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():  # float64: float32 weights are exact there, so only the computations differ
        out, ref = model.double().eval()(x), hf.double()(pixel_values=x)
    torch.testing.assert_close(ref.logits, out.pred_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.pred_boxes, out.pred_boxes, atol=1e-6, rtol=0)
    # the same through load_model (preset inferred from the tensors) and the Detector
    assert rtdetr.load_model(tmp_path / "two").config.num_classes == 2
    # an explicit, different class count still refuses, pointing at fine-tuning
    with pytest.raises(rtdetr.weights.WeightsMismatchError, match="allow_head_mismatch"):
        rtdetr.build_model("rtdetr_r18vd", weights=str(tmp_path / "two"), num_classes=80)
