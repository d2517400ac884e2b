"""TracedGraphs: traced per shape once a shape comes back, checked against eager, eager on any failure."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from rtdetr.infer.graph_cache import TracedGraphs, _mismatch
from rtdetr.infer.torch_backend import TorchBackend


class Toy(nn.Module):
    """(labels, boxes, scores) from an image batch, like the end-to-end detector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor, sizes: torch.Tensor):
        f = self.conv(images).flatten(2).mean(-1)  # [B, 4]
        scores = f.sigmoid()
        return f.argmax(-1, keepdim=True), f[:, :, None].expand(-1, -1, 4) * sizes[:, None, :1].to(f.dtype), scores


def _inputs(b: int = 1, s: int = 8):
    return torch.rand(b, 3, s, s), torch.full((b, 2), s)


def test_a_shape_is_traced_on_its_third_call_and_gives_the_eager_result() -> None:
    torch.manual_seed(0)
    toy = Toy().eval()
    graphs = TracedGraphs(toy, trace_after=3)
    images, sizes = _inputs()
    with torch.inference_mode():
        expected = toy(images, sizes)
        for call in range(1, 5):
            out = graphs(images, sizes)
            assert graphs.num_graphs == (1 if call >= 3 else 0)
            for e, g in zip(expected, out):
                torch.testing.assert_close(g, e)
    assert isinstance(graphs._graphs[next(iter(graphs._graphs))], torch.jit.ScriptModule)


def test_least_recently_used_graphs_are_dropped() -> None:
    graphs = TracedGraphs(Toy().eval(), trace_after=1, max_graphs=2)
    with torch.inference_mode():
        for s in (8, 16, 8, 24):
            graphs(*_inputs(s=s))
    assert [k[0][-1] for k in graphs._graphs] == [8, 24]


def test_a_failed_trace_turns_tracing_off_with_one_warning(monkeypatch, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken)
    toy = Toy().eval()
    graphs = TracedGraphs(toy, trace_after=1)
    images, sizes = _inputs()
    with caplog.at_level(logging.WARNING, logger="rtdetr.infer.graph_cache"), torch.inference_mode():
        out = [graphs(images, sizes) for _ in range(3)]
        expected = toy(images, sizes)
    assert not graphs.enabled and graphs.num_graphs == 0
    assert len(caplog.records) == 1 and "cannot trace this" in caplog.records[0].getMessage()
    for o in out:
        torch.testing.assert_close(o[2], expected[2])


def test_mismatch_allows_reordered_ties_only() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    labels, boxes = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, 4)
    same = (labels, boxes, scores)
    assert _mismatch(same, (labels, boxes, scores[:, [0, 2, 1, 3]]), 1e-3) is None
    assert "scores 0.1" in _mismatch(same, (labels, boxes, scores + torch.tensor([0.1, 0, 0, 0])), 1e-3)
    assert "(1, 3)" in _mismatch(same, (labels[:, :3], boxes[:, :3], scores[:, :3]), 1e-3)
    assert "outputs" in _mismatch(same, (labels, boxes), 1e-3)
    assert _mismatch(same, (labels, boxes, torch.full_like(scores, float("nan"))), 1e-3) is not None


def test_backend_traces_on_cpu_by_default_and_not_when_eager() -> None:
    from rtdetr import build_model

    torch.manual_seed(0)
    model = build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=20)
    auto = TorchBackend(model, precision="fp32")
    eager = TorchBackend(model, precision="fp32", graph="eager")
    assert eager.graphs is None and auto.graphs is not None
    images, sizes = torch.rand(1, 3, 128, 128), torch.tensor([[200, 100]])
    expected = eager(images, sizes)
    for _ in range(3):  # a few calls do not pay for a trace (~1 s) ...
        out = auto(images, sizes)
    assert auto.graphs.num_graphs == 0 and auto.graphs.trace_after == 50
    assert auto.prepare(images, sizes) and not eager.prepare(images, sizes)  # ... asking for one does
    out = auto(images, sizes)
    assert auto.graphs.num_graphs == 1
    torch.testing.assert_close(out[2], expected[2], atol=1e-4, rtol=0)  # scores, sorted by both
    with pytest.raises(ValueError, match="graph must be one of"):
        TorchBackend(model, graph="compiled")


def test_cli_eager_flag_reaches_the_backend() -> None:
    import argparse

    from rtdetr.cli_options import detector_from_args

    base = dict(model="rtdetrv2_hgnetv2_n", weights=None, device="cpu", precision="fp32", imgsz=320)
    eager = detector_from_args(argparse.Namespace(**base, eager=True, set=["num_classes=3"]))
    default = detector_from_args(argparse.Namespace(**base, set=["num_classes=3"]))  # a command without --eager
    assert eager.backend.graphs is None and default.backend.graphs is not None


@pytest.mark.parametrize("preset", ["rtdetr_r18vd", "dfine_hgnetv2_n", "dfine_cspdarknet_n"])
def test_other_families_trace_to_the_eager_result(preset: str) -> None:
    """ResNet and CSPDarknet backbones, the D-FINE decoder: traced fp32 outputs equal eager ones exactly."""
    from rtdetr import build_model

    torch.manual_seed(0)
    model = build_model(preset, num_classes=4, num_queries=30)
    traced, eager = TorchBackend(model, precision="fp32"), TorchBackend(model, precision="fp32", graph="eager")
    images, sizes = torch.rand(1, 3, 160, 160), torch.tensor([[320, 240]])
    expected = eager(images, sizes)
    assert traced.prepare(images, sizes)
    out = traced(images, sizes)
    assert traced.graphs.num_graphs == 1 and traced.graphs.enabled
    for e, g in zip(expected, out):
        assert torch.equal(e, g)


def test_autocast_state_gets_its_own_graph() -> None:
    """A graph bakes in the casts of its autocast state: a call under another state must not reuse it."""
    toy = Toy().eval()
    graphs = TracedGraphs(toy, trace_after=2)
    images, sizes = _inputs()
    with torch.inference_mode():
        for _ in range(2):
            graphs(images, sizes)  # fp32: traced on the second call
        assert graphs.num_graphs == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = graphs(images, sizes)  # first call in bf16: eager, not the fp32 graph
            expected = toy(images, sizes)
    assert graphs.num_graphs == 1 and len(graphs._seen) == 2
    assert low[2].dtype == expected[2].dtype == torch.bfloat16
    torch.testing.assert_close(low[2], expected[2], rtol=0, atol=0)


def test_detector_warmup_traces_its_batch_shape() -> None:
    from rtdetr import Detector, build_model

    torch.manual_seed(0)
    det = Detector(build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=20), imgsz=128, precision="fp32")
    assert det.backend.graphs.num_graphs == 0
    det.warmup(batch_size=2, runs=1)
    assert [k[0] for k in det.backend.graphs._graphs] == [(2, 3, 128, 128)]
