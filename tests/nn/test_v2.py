"""RT-DETRv2 and the HGNetv2 presets: reference layout and parity, checkpoint layouts, presets."""

from __future__ import annotations

import copy
import io
import json
import logging

import pytest
import torch

import rtdetr
from rtdetr.config import PAPER_RESULTS, PRESETS, TrainRecipe
from rtdetr.nn.query_selection import generate_anchors, select_topk
from rtdetr.summary import summarize

from ..conftest import assert_matches_forward_fixture, filled_double_model, reference_file

V2_PRESETS = [
    "rtdetrv2_r18vd",
    "rtdetrv2_r34vd",
    "rtdetrv2_r50vd_m",
    "rtdetrv2_r50vd",
    "rtdetrv2_r101vd",
    "rtdetrv2_hgnetv2_l",
    "rtdetrv2_hgnetv2_x",
    "rtdetrv2_hgnetv2_h",
    "rtdetrv2_hgnetv2_n",
    "rtdetrv2_hgnetv2_s",
]


def _entries(state: dict) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]


@pytest.mark.parametrize(
    "name, manifest, overrides",
    [
        ("rtdetrv2_r18vd", "v2_r18vd", {}),
        ("rtdetrv2_r18vd", "v2_r18vd_dsp", {"cross_attn_method": "discrete"}),
        ("rtdetrv2_hgnetv2_l", "v2_hgnetv2_l", {}),
    ],
)
def test_state_dict_matches_v2_manifest(name, manifest, overrides):
    expected = [tuple(e) for e in json.loads(reference_file(f"state_dict_{manifest}.json").read_text())]
    model = rtdetr.build_model(name, **overrides)
    assert _entries(model.state_dict()) == expected  # keys, shapes, dtypes (bool valid_mask), order
    if overrides.get("cross_attn_method") == "discrete":
        # the reference freezes the sampling offsets of discrete-sampling models
        offsets = [p for n, p in model.named_parameters() if "sampling_offsets" in n]
        assert offsets and not any(p.requires_grad for p in offsets)


@pytest.mark.parametrize("name, variant", [("rtdetrv2_r18vd", "v2_r18vd"), ("rtdetrv2_hgnetv2_l", "v2_hgnetv2_l")])
def test_forward_matches_v2_fixture(name, variant):
    """The fixture's anchors and num_points_scale are the random values fill.py wrote
    into those state-dict buffers: the reference uses its anchors buffer in eval at
    the eval size, and its num_points_scale buffer always; so do we."""
    fixture = torch.load(reference_file(f"forward_{variant}.pt"))
    model = filled_double_model(name)
    computed, valid = generate_anchors(model.decoder._eval_shapes)
    assert not torch.equal(model.decoder.anchors, computed.double())  # overwritten by fill
    assert torch.equal(model.decoder.valid_mask, valid)  # bool: fill leaves it alone
    assert_matches_forward_fixture(model, fixture)


def test_eval_size_uses_anchor_buffers_other_sizes_and_training_compute():
    dec = rtdetr.build_model("rtdetrv2_r18vd", num_queries=10).decoder.eval()
    shapes = dec._eval_shapes
    assert shapes == [(80, 80), (40, 40), (20, 20)]
    anchors, valid = dec._anchors(shapes, torch.device("cpu"))
    assert anchors is dec.anchors and valid is dec.valid_mask
    other, _ = dec._anchors([(40, 40), (20, 20), (10, 10)], torch.device("cpu"))
    assert torch.equal(other, generate_anchors([(40, 40), (20, 20), (10, 10)])[0])
    dec.train()
    computed, _ = dec._anchors(shapes, torch.device("cpu"))
    assert computed is not dec.anchors and torch.equal(computed, dec.anchors)


def _perturbed(name: str, **overrides) -> rtdetr.RTDETR:
    torch.manual_seed(0)
    model = rtdetr.build_model(name, num_queries=20, **overrides).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_both_layouts_load_into_both_models_strictly():
    v1 = _perturbed("rtdetr_r18vd")
    v2 = rtdetr.build_model("rtdetrv2_r18vd", num_queries=20).eval()
    assert "encoder.input_proj.0.0.weight" in v1.state_dict()
    assert "encoder.input_proj.0.conv.weight" in v2.state_dict()
    assert "decoder.enc_output.proj.weight" in v2.state_dict() and "decoder.anchors" in v2.state_dict()
    v2.load_state_dict(v1.state_dict())  # strict: renamed, v2-only buffers keep the model's values
    assert torch.equal(v2.decoder.anchors, generate_anchors(v2.decoder._eval_shapes)[0])
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(v2(x).pred_logits, v1(x).pred_logits, atol=0, rtol=0)

    back = rtdetr.build_model("rtdetr_r18vd", num_queries=20).eval()
    back.load_state_dict(v2.state_dict())  # strict: renamed back, anchors / num_points_scale dropped
    for k, v in v1.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    # sub-modules convert too, and so do copies (EMA) and pickled models
    v2.decoder.load_state_dict(v1.decoder.state_dict())
    v1.encoder.load_state_dict(v2.encoder.state_dict())
    copy.deepcopy(v2).load_state_dict(v1.state_dict())
    buf = io.BytesIO()
    torch.save(v2, buf)
    buf.seek(0)
    torch.load(buf, weights_only=False).load_state_dict(v1.state_dict())


def test_v2_checkpoint_for_another_eval_size_keeps_own_anchors(caplog):
    src = rtdetr.build_model("rtdetrv2_r18vd", num_queries=20)
    dst = rtdetr.build_model("rtdetrv2_r18vd", num_queries=20, eval_spatial_size=(320, 320))
    with caplog.at_level(logging.DEBUG, logger="rtdetr.nn.checkpoint_layout"):
        dst.load_state_dict(src.state_dict())
    assert "another eval size" in caplog.text  # said at debug level ...
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # ... but not a warning: expected
    assert dst.decoder.anchors.shape == (1, 2100, 4)


def test_v2_presets_and_recipes():
    assert set(V2_PRESETS) <= set(rtdetr.list_models())
    assert {"rtdetr_hgnetv2_l", "rtdetr_hgnetv2_x"} <= set(rtdetr.list_models())
    for name, cfg in PRESETS.items():
        assert isinstance(cfg.train, TrainRecipe) and cfg.train.source, name
        assert cfg.checkpoint_layout == ("v2" if name.startswith(("rtdetrv2_", "dfine_")) else "v1"), name
    r18 = PRESETS["rtdetrv2_r18vd"].train
    assert (r18.epochs, r18.stop_epoch, r18.backbone_lr, r18.multi_scale) == (120, 117, 1e-4, False)
    assert (PRESETS["rtdetrv2_r50vd_m"].train.epochs, PRESETS["rtdetrv2_r50vd_m"].train.stop_epoch) == (84, 81)
    assert PRESETS["rtdetr_r50vd"].train.stop_epoch is None and PRESETS["rtdetr_r50vd"].train.epochs == 72
    assert PRESETS["rtdetrv2_r101vd"].train.backbone_lr == 1e-6
    assert rtdetr.get_config("rtdetrv2_r18vd", epochs=12).train.epochs == 12
    model = rtdetr.build_model("rtdetrv2_hgnetv2_l", cross_attn_method="discrete", num_points=(3, 4, 2))
    attn = model.decoder.decoder.layers[0].cross_attn
    assert attn.method == "discrete" and attn.num_points == [3, 4, 2]
    assert attn.sampling_offsets.out_features == 8 * 9 * 2 and attn.num_points_scale.shape == (9,)


def test_agnostic_query_selection_scores_objectness():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetrv2_r18vd", num_queries=15, query_select_method="agnostic")
    assert model.decoder.enc_score_head.out_features == 1
    assert model.decoder.dec_score_head[0].out_features == 80
    targets = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}]
    out = model.train()(torch.rand(1, 3, 128, 128), targets)
    assert out["aux_outputs"][-1]["pred_logits"].shape == (1, 15, 1)
    assert out["enc_meta"] == {"class_agnostic": True}
    assert model.eval()(torch.rand(1, 3, 128, 128)).pred_logits.shape == (1, 15, 80)


def test_select_topk_methods():
    logits = torch.tensor([[[0.0, 5.0], [4.0, 4.5], [1.0, 0.0]]])  # [B=1, S=3, C=2]
    assert select_topk(logits, 2, "default").tolist() == [[0, 1]]
    assert select_topk(logits, 2, "one2many").tolist() == [[0, 1]]  # (0, c1) then (1, c1)
    assert select_topk(logits, 3, "one2many").tolist() == [[0, 1, 1]]  # token 1 once per class
    assert select_topk(logits[..., :1], 1, "agnostic").tolist() == [[1]]
    with pytest.raises(ValueError):
        select_topk(logits, 1, "agnostic")


@pytest.mark.parametrize("name", ["rtdetrv2_hgnetv2_n", "rtdetrv2_hgnetv2_s"])
def test_small_presets_run_train_and_meet_their_budget(name):
    torch.manual_seed(0)
    model = rtdetr.build_model(name, num_queries=30)
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.4, 0.5, 0.2, 0.2], [0.7, 0.3, 0.1, 0.3]])}]
    out = model.train()(torch.rand(1, 3, 160, 224), targets)
    sum(v.sum() for v in (out["pred_logits"], out["pred_boxes"])).backward()
    with torch.no_grad():
        pred = model.eval()(torch.rand(2, 3, 200, 264))
    assert pred.pred_logits.shape == (2, 30, 80) and torch.isfinite(pred.pred_boxes).all()
    with torch.device("meta"):  # shapes only: the same count (tests/test_summary.py)
        s = summarize(rtdetr.build_model(name))
    params_m, gflops = {"rtdetrv2_hgnetv2_n": (4, 7), "rtdetrv2_hgnetv2_s": (10, 25)}[name]
    assert s.params / 1e6 == pytest.approx(params_m, rel=0.1)
    assert s.gflops == pytest.approx(gflops, rel=0.1)


@pytest.mark.parametrize("name", ["rtdetrv2_r18vd", "rtdetrv2_r50vd_m"])
def test_v2_presets_have_the_v1_architecture(name):
    """RT-DETRv2 reports the v1 params / GFLOPs: its changes add no weights."""
    v1, v2 = rtdetr.build_model(name.replace("rtdetrv2_", "rtdetr_")), rtdetr.build_model(name)
    assert sum(p.numel() for p in v1.parameters()) == sum(p.numel() for p in v2.parameters())
    assert PAPER_RESULTS[name]["params_m"] == PAPER_RESULTS[name.replace("rtdetrv2_", "rtdetr_")]["params_m"]


@pytest.mark.parametrize("name", ["rtdetr_hgnetv2_l", "rtdetr_hgnetv2_x"])
def test_hgnetv2_presets_match_the_paper(name):
    with torch.device("meta"):
        s = summarize(rtdetr.build_model(name))
    paper = PAPER_RESULTS[name]
    assert s.params / 1e6 == pytest.approx(paper["params_m"], rel=0.03)
    assert s.gflops == pytest.approx(paper["gflops"], rel=0.03)
