"""TorchBackend / Detector construction: precision choice, the caller's module untouched, CPU set-up."""

from __future__ import annotations

import logging

import pytest
import torch

import rtdetr
from rtdetr import runtime
from rtdetr.infer import Detector, TorchBackend


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=20, num_top_queries=20)


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("rtdetr")]


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_capability_check(monkeypatch, small_model, caplog, native, expected):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
    with caplog.at_level(logging.INFO):
        detector = Detector(small_model, imgsz=64)  # precision "auto" is the default
    assert detector.backend.precision == expected
    assert not _warnings(caplog)
    labels, boxes, scores = detector.backend(torch.rand(1, 3, 64, 64), torch.tensor([[1920, 1080]]))
    assert boxes.dtype == scores.dtype == torch.float32 and labels.shape == (1, 20)


def test_explicit_bf16_on_emulating_cpu_runs_with_one_warning(monkeypatch, small_model, caplog):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        backend = TorchBackend(small_model, precision="bf16")
    assert backend.precision == "bf16"
    (record,) = _warnings(caplog)
    assert "no native bf16" in record.getMessage()


def test_env_override_reaches_the_detector(monkeypatch, small_model):
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    assert Detector(small_model, imgsz=64).backend.precision == "fp32"
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert Detector(small_model, imgsz=64).backend.precision == "bf16"


def test_fp16_on_cpu_is_a_user_error(small_model):
    from rtdetr.errors import UserError

    with pytest.raises(UserError, match="CUDA"):
        TorchBackend(small_model, precision="fp16")


def test_detector_leaves_the_callers_model_alone():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=20, num_top_queries=20)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layouts = {n: p.is_contiguous() for n, p in model.named_parameters()}
    detector = Detector(model, imgsz=64, precision="fp32")
    detector.predict(torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8), conf=0.0)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()  # no RepVGG fusion or BatchNorm folding: 556 keys, not 300
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert {n: p.is_contiguous() for n, p in model.named_parameters()} == layouts  # not made channels-last
    assert len(detector.backend.module.model.state_dict()) < len(before)  # the copy was fused


def test_inplace_works_on_the_given_module():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=20, num_top_queries=20)
    keys = len(model.state_dict())
    backend = TorchBackend(model, inplace=True)
    assert backend.module.model is model and not model.training and len(model.state_dict()) < keys


def _denormals_flushed() -> bool:
    return float(torch.tensor([1e-39]) * 1.0) == 0.0  # 1e-39 is below float32's smallest normal


def test_detector_flushes_denormals(small_model):
    if not torch.set_flush_denormal(False):
        pytest.skip("no flush-denormal support on this CPU")
    try:
        assert not _denormals_flushed()
        Detector(small_model, device="cpu", imgsz=64, precision="fp32")
        assert _denormals_flushed()
    finally:
        torch.set_flush_denormal(True)
