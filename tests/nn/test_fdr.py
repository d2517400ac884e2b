"""Fine-grained distribution refinement (D-FINE's FDR): bin values, integral, box <-> distance, decoder option."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import rtdetr
from rtdetr.builder import build_postprocessor
from rtdetr.config import PRESETS, get_config
from rtdetr.errors import UserError
from rtdetr.nn.fdr import (
    box_to_distance,
    distance_to_bins,
    distance_to_box,
    distribution_integral,
    weighting_function,
)

IMGSZ = 160  # 10x10 + 5x5 = 125 encoder tokens for the n presets (stride-16/32 maps)


def _fdr_model(**overrides) -> rtdetr.RTDETR:
    torch.manual_seed(0)
    kw = {"num_classes": 3, "num_queries": 50, "num_denoising": 10, "eval_spatial_size": (IMGSZ, IMGSZ)}
    return rtdetr.build_model("dfine_hgnetv2_n", **{**kw, **overrides})


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


# ------------------------------------------------------------------ weighting function


def test_weighting_function_values_from_the_formula():
    # N = 8, a = 0.5, c = 4: inner bins ((1 + a c)^(2k / (N - 2)) - 1) / c = (3^(k/3) - 1) / 4, ends 2a.
    w = weighting_function(8, 0.5, 4.0)
    inner = [(3 ** (k / 3) - 1) / 4 for k in (1, 2, 3)]
    expected = [-1.0, *(-v for v in reversed(inner)), 0.0, *inner, 1.0]
    assert w.dtype == torch.float32 and w.shape == (9,)
    torch.testing.assert_close(w, torch.tensor(expected), rtol=0, atol=1e-7)
    assert inner[-1] == pytest.approx(0.5)  # the last inner bin is exactly a


@pytest.mark.parametrize("reg_max, up, c", [(32, 0.5, 4.0), (16, 0.25, 8.0), (4, 1.0, 1.0)])
def test_weighting_function_monotone_symmetric_bounded(reg_max, up, c):
    w = weighting_function(reg_max, up, c)
    assert w.shape == (reg_max + 1,)
    assert (w[1:] > w[:-1]).all()  # strictly increasing
    torch.testing.assert_close(w, -w.flip(0))  # W(n) = -W(N - n)
    assert w[reg_max // 2] == 0
    assert w[-1].item() == pytest.approx(2 * up) and w[-2].item() == pytest.approx(up)


def test_larger_reg_scale_puts_more_bins_near_zero():
    coarse, fine = weighting_function(32, 0.5, 1.0), weighting_function(32, 0.5, 16.0)
    inner = slice(17, 31)  # same end points (a, 2a); the small offsets get finer steps
    assert (fine[inner] < coarse[inner]).all()
    assert fine[17] < coarse[17] / 2


@pytest.mark.parametrize("reg_max", [3, 2, 0, 7])
def test_weighting_function_rejects_bad_reg_max(reg_max):
    with pytest.raises(UserError, match="reg_max"):
        weighting_function(reg_max, 0.5, 4.0)


# ------------------------------------------------------------------ integral and boxes


def test_integral_of_one_hot_is_the_bin_value_and_uniform_is_zero():
    w = weighting_function(32, 0.5, 4.0)
    logits = torch.full((33, 4, 33), -1e4)
    for n in range(33):
        logits[n, :, n] = 0.0  # softmax is exactly one-hot at bin n
    torch.testing.assert_close(distribution_integral(logits, w), w[:, None].expand(33, 4))
    assert distribution_integral(torch.zeros(2, 5, 4, 33), w).abs().max() < 1e-6  # symmetry of W


def test_box_distance_round_trip_and_edges():
    g = torch.Generator().manual_seed(0)
    ref = torch.cat([torch.rand(50, 2, generator=g), 0.05 + 0.5 * torch.rand(50, 2, generator=g)], 1)
    box = torch.cat([torch.rand(50, 2, generator=g), 0.05 + 0.5 * torch.rand(50, 2, generator=g)], 1)
    dist = box_to_distance(ref, box)
    torch.testing.assert_close(distance_to_box(ref, dist), box, rtol=0, atol=1e-6)
    torch.testing.assert_close(distance_to_box(ref, torch.zeros(50, 4)), ref, rtol=0, atol=1e-7)
    # One hand-checked case: ref x in [0.4, 0.6]; left edge moved out by 0.25 w = 0.05 -> x1 = 0.35.
    out = distance_to_box(torch.tensor([0.5, 0.5, 0.2, 0.4]), torch.tensor([0.25, 0.0, 0.0, -0.25]))
    x1, y1, x2, y2 = out[0] - out[2] / 2, out[1] - out[3] / 2, out[0] + out[2] / 2, out[1] + out[3] / 2
    torch.testing.assert_close(torch.stack([x1, y1, x2, y2]), torch.tensor([0.35, 0.3, 0.6, 0.6]))


def test_distance_to_bins_interpolates_and_clamps():
    w = weighting_function(32, 0.5, 4.0)
    d = torch.linspace(-0.999, 0.999, 101)
    left, wl, wr = distance_to_bins(d, w)
    assert (left >= 0).all() and (left <= 31).all()
    assert (w[left] <= d + 1e-7).all() and (d <= w[left + 1] + 1e-7).all()
    torch.testing.assert_close(wl * w[left] + wr * w[left + 1], d, rtol=0, atol=1e-6)
    left, wl, wr = distance_to_bins(torch.tensor([-5.0, 5.0]), w)
    assert left.tolist() == [0, 31] and wl.tolist() == [1.0, 0.0] and wr.tolist() == [0.0, 1.0]


# ------------------------------------------------------------------ the decoder option


def test_fdr_preset_is_the_n_preset_with_the_option():
    fdr, base = PRESETS["dfine_hgnetv2_n"], PRESETS["rtdetrv2_hgnetv2_n"]
    assert (fdr.decoder.box_refine, fdr.decoder.reg_max, fdr.decoder.reg_up, fdr.decoder.reg_scale) == (
        "fdr",
        32,
        0.5,
        4.0,
    )
    assert dataclasses.replace(fdr.decoder, box_refine="default") == base.decoder
    assert (fdr.backbone, fdr.encoder, fdr.checkpoint_layout) == (base.backbone, base.encoder, base.checkpoint_layout)
    assert get_config("rtdetrv2_hgnetv2_n", box_refine="fdr").decoder == fdr.decoder


def test_reference_presets_build_without_fdr_parts():
    for name in ("rtdetrv2_hgnetv2_n", "rtdetr_r18vd"):
        cfg = PRESETS[name]
        assert cfg.decoder.box_refine == "default", name
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3)
    assert model.decoder.fdr is None
    assert all(h.layers[-1].out_features == 4 for h in model.decoder.dec_bbox_head)
    assert not [k for k in model.state_dict() if "fdr" in k or "pre_bbox_head" in k]


def test_fdr_option_validation():
    with pytest.raises(ValueError, match="box_refine"):
        rtdetr.build_model("rtdetrv2_hgnetv2_n", box_refine="gfl")
    with pytest.raises(UserError, match="reg_max"):
        rtdetr.build_model("dfine_hgnetv2_n", reg_max=5)


def test_fdr_eval_outputs_and_postprocess():
    model = _fdr_model().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, IMGSZ, IMGSZ))
    assert set(out) == {"pred_logits", "pred_boxes"}  # what postprocessing and export read
    assert out["pred_logits"].shape == (2, 50, 3) and out["pred_boxes"].shape == (2, 50, 4)
    assert torch.isfinite(out["pred_boxes"]).all()
    dets = build_postprocessor(model)(out, torch.tensor([[IMGSZ, IMGSZ]] * 2))
    assert len(dets) == 2 and dets[0]["boxes"].shape[1] == 4 and len(dets[0]["scores"]) == 50 * 3  # top-K of Q x C


def test_fdr_training_outputs_shapes_and_initial_boxes():
    model = _fdr_model().train()
    out = model(torch.rand(2, 3, IMGSZ, IMGSZ), _targets())
    num_dn = out["dn_meta"]["dn_num_split"][0]
    fdr, dn_fdr = out["fdr"], out["dn_fdr"]
    assert fdr["corners"].shape == (3, 2, 50, 4, 33) and dn_fdr["corners"].shape == (3, 2, num_dn, 4, 33)
    assert fdr["ref_boxes"].shape == (2, 50, 4) and not fdr["ref_boxes"].requires_grad
    assert fdr["pre_outputs"]["pred_boxes"].requires_grad
    torch.testing.assert_close(fdr["pre_outputs"]["pred_logits"], out["aux_outputs"][0]["pred_logits"])
    # Fresh heads are zero: uniform distributions (offset 0), so every layer keeps the initial box.
    assert fdr["corners"].abs().max() == 0
    for layer in [*out["aux_outputs"][:2], out]:
        torch.testing.assert_close(layer["pred_boxes"], fdr["ref_boxes"], rtol=0, atol=1e-6)


def test_fdr_layers_refine_residually():
    model = _fdr_model()
    with torch.no_grad():  # generic weights, so the layers differ
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.train()
    out = model(torch.rand(2, 3, IMGSZ, IMGSZ), _targets())
    # The last layer's box depends on the first layer's edge head (residual logits, not detached)...
    out["pred_boxes"].sum().backward()
    assert model.decoder.dec_bbox_head[0].layers[-1].weight.grad.abs().sum() > 0
    # ... and its box is the integral of its accumulated logits, measured from the initial boxes.
    fdr = out["fdr"]
    expect = distance_to_box(fdr["ref_boxes"], distribution_integral(fdr["corners"][-1], fdr["project"]))
    torch.testing.assert_close(out["pred_boxes"], expect)


def test_fdr_eval_idx_stops_early():
    model = _fdr_model(eval_idx=0)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.rand(1, 3, IMGSZ, IMGSZ)
    model.train()
    for m in model.modules():  # batch statistics would change the features, not what is tested
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        train_out = model(images, [_targets()[1]])
    model.eval()
    with torch.no_grad():
        eval_out = model(images)
    # Eval stops at layer 0 and reports its box (the training pass's layer-0 output, whose
    # matching queries do not see the denoising ones).
    torch.testing.assert_close(eval_out["pred_boxes"], train_out["aux_outputs"][0]["pred_boxes"], atol=1e-5, rtol=0)
    assert not torch.allclose(eval_out["pred_boxes"], train_out["pred_boxes"], atol=1e-3)


def test_fdr_onnx_export_matches_eager(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rtdetr.export import check_export, export_onnx

    model = _fdr_model(eval_spatial_size=(128, 128)).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.class_names = ["a", "b", "c"]
    path = export_onnx(model, tmp_path / "fdr.onnx", imgsz=128)
    report = check_export(path, model, imgsz=128, batch=1, threads=1)
    assert report.passed, report.summary()
    assert math.isfinite(report.max_box_diff)
