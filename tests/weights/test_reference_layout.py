"""A reference-layout checkpoint (ema.module + model) reproduces the reference forward fixture."""

from __future__ import annotations

import torch

import rtdetr
from rtdetr.weights import load_weights

from ..conftest import load_fill, reference_file


def test_reference_checkpoint_reproduces_the_fixture_in_float64(tmp_path):
    fixture = torch.load(reference_file("forward_r18vd.pt"))
    fill = load_fill()
    source = rtdetr.build_model("rtdetr_r18vd").double()
    fill.fill_state_dict(source)  # after .double(): float64 values, not rounded float32 ones
    sd = source.state_dict()
    decoy = {k: torch.zeros_like(v) for k, v in sd.items()}  # "model" differs: ema.module must win
    path = tmp_path / "rtdetr_r18vd_reference.pth"
    torch.save({"ema": {"module": sd, "updates": 1000, "warmups": 2000}, "model": decoy, "last_epoch": 71}, path)

    model = rtdetr.build_model("rtdetr_r18vd").double().eval()  # load into a float64 model: exact
    report = load_weights(model, path)
    assert (report.format, report.state_key, report.container) == ("reference", "ema.module", "torch")
    assert not report.missing_keys and not report.unexpected_keys and not report.reinitialized_keys
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())

    x = fill.reference_image(fixture.get("input_seed", 0))
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.pred_logits, fixture["pred_logits"], atol=1e-8, rtol=0)
    torch.testing.assert_close(out.pred_boxes, fixture["pred_boxes"], atol=1e-8, rtol=0)

    # build_model(weights=...) gives a float32 model: the same weights, rounded
    m32 = rtdetr.build_model("rtdetr_r18vd", weights=str(path))
    w = "decoder.dec_score_head.2.weight"
    assert m32.state_dict()[w].dtype == torch.float32
    assert torch.equal(m32.state_dict()[w], sd[w].float())
