"""Key names ours <-> transformers, both spellings, every v1 preset (no transformers needed)."""

from __future__ import annotations

import json

import pytest
import torch

import rtdetr
from rtdetr.weights import from_hf_state_dict, to_hf_state_dict
from rtdetr.weights.hf_naming import hf_naming_of, is_hf_state_dict

from ..conftest import reference_file

V1 = ["r18vd", "r34vd", "r50vd_m", "r50vd", "r101vd"]


def _manifest_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The reference state dict of a preset as meta tensors (names and shapes, no memory)."""
    manifest = json.loads(reference_file(f"state_dict_{variant}.json").read_text())
    return {k: torch.empty(shape, dtype=getattr(torch, dt), device="meta") for k, shape, dt in manifest}


@pytest.mark.parametrize("variant", V1)
@pytest.mark.parametrize("naming", ["v4", "v5"])
def test_names_round_trip_for_every_preset(variant, naming):
    sd = _manifest_state_dict(variant)
    hf = to_hf_state_dict(sd, naming=naming)
    assert is_hf_state_dict(hf) and not is_hf_state_dict(sd)
    assert hf_naming_of(hf) == naming
    # q/k/v split: 3 HF tensors per packed projection
    packed = sum(k.endswith(("in_proj_weight", "in_proj_bias")) for k in sd)
    assert len(hf) == len(sd) + 2 * packed
    back, unmapped = from_hf_state_dict(hf)
    assert unmapped == []
    assert sorted(back) == sorted(sd)
    assert all(back[k].shape == sd[k].shape for k in sd)


def test_spellings_differ_where_transformers_renamed():
    sd = _manifest_state_dict("r18vd")
    v4, v5 = to_hf_state_dict(sd, naming="v4"), to_hf_state_dict(sd, naming="v5")
    assert "model.encoder.encoder.0.layers.0.self_attn.out_proj.weight" in v4
    assert "model.encoder.aifi.0.layers.0.self_attn.o_proj.weight" in v5
    assert "model.decoder.layers.0.fc1.weight" in v4 and "model.decoder.layers.0.mlp.fc1.weight" in v5
    assert "model.backbone.model.encoder.stages.1.layers.0.shortcut.1.convolution.weight" in v5
    assert "model.backbone.model.embedder.embedder.2.normalization.running_var" in v5
    assert "model.decoder.class_embed.2.bias" in v5 and "model.decoder_input_proj.0.1.weight" in v5


def test_values_round_trip_and_qkv_order():
    model = rtdetr.build_model("rtdetr_r18vd")
    sd = model.state_dict()
    hf = to_hf_state_dict(sd, naming="v5")
    w = sd["decoder.decoder.layers.1.self_attn.in_proj_weight"]
    d = w.shape[1]
    assert torch.equal(hf["model.decoder.layers.1.self_attn.q_proj.weight"], w[:d])
    assert torch.equal(hf["model.decoder.layers.1.self_attn.k_proj.weight"], w[d : 2 * d])
    assert torch.equal(hf["model.decoder.layers.1.self_attn.v_proj.weight"], w[2 * d :])
    back, _ = from_hf_state_dict(hf)
    assert all(torch.equal(back[k], v) for k, v in sd.items())


def test_published_v4_files_with_duplicated_top_level_heads():
    """PekingU files may hold class_embed.N / bbox_embed.N next to model.decoder.*; they collapse."""
    sd = _manifest_state_dict("r18vd")
    hf = to_hf_state_dict(sd, naming="v4")
    for k in [k for k in hf if k.startswith("model.decoder.class_embed.") or k.startswith("model.decoder.bbox_embed.")]:
        hf[k.removeprefix("model.decoder.")] = hf[k]
    back, unmapped = from_hf_state_dict(hf)
    assert unmapped == [] and sorted(back) == sorted(sd)


def test_unmappable_keys_are_reported():
    with pytest.raises(ValueError, match="no transformers RT-DETR equivalent"):
        to_hf_state_dict({"backbone.stem.stem1.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="deployed"):
        to_hf_state_dict({"encoder.fpn_blocks.0.bottlenecks.0.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="RT-DETRv2"):
        to_hf_state_dict({"decoder.enc_output.proj.weight": torch.zeros(1)})
    back, unmapped = from_hf_state_dict({"model.backbone.model.stem.foo": torch.zeros(1)})
    assert back == {} and unmapped == ["model.backbone.model.stem.foo"]
    _, unmapped = from_hf_state_dict({"model.decoder.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)})
    assert unmapped == ["decoder.decoder.layers.0.self_attn.in_proj_weight (q only)"]
