"""The training-only one-to-many query group (num_o2m_queries): separate in training, absent at inference."""

from __future__ import annotations

import pytest
import torch

import rtdetr
from rtdetr.config import ConfigError, get_config
from rtdetr.nn.hybrid_queries import hybrid_attn_mask, split_o2m

TARGETS = [
    {"labels": torch.tensor([3, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]


def _model(num_o2m: int, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=5, num_queries=20, num_o2m_queries=num_o2m, **kw)


def test_attn_mask_isolates_the_group():
    base = torch.tensor([[False, True, False], [False, False, True], [False, False, False]])
    mask = hybrid_attn_mask(base, 3, 2, torch.device("cpu"))
    expected = torch.tensor(
        [
            [False, True, False, True, True],
            [False, False, True, True, True],
            [False, False, False, True, True],
            [True, True, True, False, False],
            [True, True, True, False, False],
        ]
    )
    assert torch.equal(mask, expected)
    no_base = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])
    assert torch.equal(hybrid_attn_mask(None, 2, 1, torch.device("cpu")), no_base)
    with pytest.raises(ValueError, match="base mask has shape"):
        hybrid_attn_mask(base, 4, 1, torch.device("cpu"))


def test_split_o2m_cuts_the_trailing_queries():
    boxes, logits = torch.rand(3, 2, 7, 4), torch.rand(3, 2, 7, 5)
    b, lg, outs = split_o2m(boxes, logits, 3)
    assert b.shape == (3, 2, 4, 4) and lg.shape == (3, 2, 4, 5) and len(outs) == 3
    assert torch.equal(outs[1]["pred_boxes"], boxes[1, :, 4:]) and torch.equal(outs[2]["pred_logits"], logits[2, :, 4:])


def test_eval_outputs_and_weights_identical_with_the_option_on_or_off():
    plain, hybrid = _model(0).eval(), _model(30).eval()
    assert plain.state_dict().keys() == hybrid.state_dict().keys()
    hybrid.load_state_dict(plain.state_dict())  # strict: no parameters of its own
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        a, b = plain(x), hybrid(x)
    assert a.keys() == b.keys() == {"pred_logits", "pred_boxes"}
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


@pytest.mark.parametrize("num_o2m", [12, 30])  # fewer and more than the 20 main queries
def test_training_adds_the_group_without_changing_the_main_queries(num_o2m):
    plain, hybrid = _model(0).train(), _model(num_o2m).train()
    hybrid.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 160, 160)
    torch.manual_seed(1)  # same denoising noise for both
    a = plain(x, TARGETS)
    torch.manual_seed(1)
    b = hybrid(x, TARGETS)
    assert "o2m_outputs" not in a
    o2m = b["o2m_outputs"]
    assert len(o2m) == 3  # one per decoder layer
    assert o2m[-1]["pred_logits"].shape == (2, num_o2m, 5) and o2m[-1]["pred_boxes"].shape == (2, num_o2m, 4)
    # The mask hides the group from the main and denoising queries: their outputs are the plain model's.
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-5, rtol=1e-5)
    for da, db in zip(a["dn_aux_outputs"], b["dn_aux_outputs"]):
        torch.testing.assert_close(db["pred_logits"], da["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["aux_outputs"][-1]["pred_logits"], a["aux_outputs"][-1]["pred_logits"])


def test_the_group_does_not_see_the_denoising_queries():
    with_dn, without_dn = _model(16).train(), _model(16, num_denoising=0).train()
    without_dn.load_state_dict(with_dn.state_dict(), strict=False)  # all but the denoising embedding
    x = torch.rand(2, 3, 160, 160)
    a, b = with_dn(x, TARGETS), without_dn(x, TARGETS)
    assert "dn_aux_outputs" in a and "dn_aux_outputs" not in b
    for oa, ob in zip(a["o2m_outputs"], b["o2m_outputs"]):
        torch.testing.assert_close(oa["pred_logits"], ob["pred_logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(oa["pred_boxes"], ob["pred_boxes"], atol=1e-5, rtol=1e-5)


def test_group_gradient_reaches_the_shared_decoder():
    model = _model(16).train()
    out = model(torch.rand(1, 3, 160, 160), TARGETS[:1])
    out["o2m_outputs"][-1]["pred_logits"].sum().backward()  # (the box heads start at zero)
    assert model.decoder.decoder.layers[0].linear1.weight.grad.abs().sum() > 0


def test_bad_count_is_a_config_error():
    with pytest.raises(ConfigError, match="num_o2m_queries"):
        get_config("rtdetrv2_hgnetv2_n", num_o2m_queries=-1)
    with pytest.raises(ValueError, match="learnt_init_query"):
        _model(30, learnt_init_query=True)


def test_reference_presets_have_the_option_off():
    assert all(get_config(name).decoder.num_o2m_queries == 0 for name in rtdetr.list_models())


def test_exported_graph_is_unchanged():
    """What ``rtdetr export`` traces (deploy-fused model + postprocessor) is the same graph with the option on."""
    import re
    import warnings

    from rtdetr.export.graph import example_inputs, export_module

    plain, hybrid = _model(0).eval(), _model(30).eval()
    hybrid.load_state_dict(plain.state_dict())
    args = example_inputs(160)

    def graph(model: torch.nn.Module) -> str:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            text = str(torch.jit.trace(export_module(model), args, check_trace=False).graph)
        return re.sub(r"___torch_mangle_\d+\.", "", text)  # class names get a counter per trace

    assert graph(plain) == graph(hybrid)
