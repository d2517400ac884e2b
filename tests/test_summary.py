"""`summarize` (what `rtdetr info` prints): the same count on the meta device as on the CPU."""

import pytest
import torch

import rtdetr
from rtdetr.summary import summarize


@pytest.mark.parametrize("name", ["dfine_hgnetv2_n", "rtdetrv2_hgnetv2_n"])
def test_meta_device_count_equals_the_cpu_count(name):
    torch.manual_seed(0)
    cpu = summarize(rtdetr.build_model(name), 320)
    with torch.device("meta"):
        model = rtdetr.build_model(name)
    assert next(model.parameters()).is_meta
    meta = summarize(model, 320)
    # Before the count ran attention through the math backend, the CPU's fused kernel
    # hid the encoder's and decoder's attention products from the counter (meta did not).
    assert meta.gflops == pytest.approx(cpu.gflops, rel=1e-9)
    assert (meta.params, meta.trainable_params) == (cpu.params, cpu.trainable_params)
    assert meta.backbone_shapes == cpu.backbone_shapes and meta.encoder_shapes == cpu.encoder_shapes
    assert meta.output_shapes == cpu.output_shapes


def test_attention_products_are_counted():
    """r18vd at 640 px: the count holds AIFI's (400 tokens of width 256) and the 3 decoder
    layers' self-attention (300 queries) products, 2 * 2 * L^2 * width FLOPs each, which the
    CPU's fused attention kernel hides from a plain FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = rtdetr.build_model("rtdetr_r18vd").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        model(torch.zeros(1, 3, 640, 640))
    counted = summarize(model, 640).gflops * 1e9
    attention = 2 * 2 * 400**2 * 256 + 3 * 2 * 2 * 300**2 * 256
    assert counted - plain.get_total_flops() == pytest.approx(attention, rel=1e-6)
