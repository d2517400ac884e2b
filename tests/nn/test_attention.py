"""multihead_attention: the module's own result outside CPU autocast, its float32 core inside."""

import torch
from torch import nn

from rtdetr.nn.attention import multihead_attention


def _inputs(seed: int = 0):
    torch.manual_seed(seed)
    attn = nn.MultiheadAttention(64, 8, batch_first=True)
    q, k, v = (torch.randn(2, 30, 64) for _ in range(3))
    mask = torch.zeros(30, 30, dtype=torch.bool)
    mask[:10, 10:] = True  # like the denoising groups: some queries must not see others
    return attn, q, k, v, mask


def test_without_autocast_it_is_the_module_call():
    attn, q, k, v, mask = _inputs()
    for m in (None, mask, torch.zeros(30, 30).masked_fill(mask, float("-inf"))):
        expected = attn(q, k, v, attn_mask=m, need_weights=False)[0]
        assert torch.equal(multihead_attention(attn, q, k, v, m), expected)


def test_under_cpu_autocast_it_matches_float32_within_bf16_rounding_and_trains():
    attn, q, k, v, mask = _inputs()
    for m in (None, mask, torch.zeros(30, 30).masked_fill(mask, float("-inf"))):
        expected = attn(q, k, v, attn_mask=m, need_weights=False)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = multihead_attention(attn, q, k, v, m)
            module_bf16 = attn(q, k, v, attn_mask=m, need_weights=False)[0]
        err = (got.float() - expected).abs().max().item()
        assert err < 0.03, err
        # no worse than the module's own bf16 autocast path
        assert err <= (module_bf16.float() - expected).abs().max().item() * 1.5 + 1e-3
    got.float().sum().backward()
    assert attn.in_proj_weight.grad is not None and attn.out_proj.weight.grad is not None
    assert attn.in_proj_weight.grad.abs().sum() > 0


def test_masked_keys_get_no_weight():
    attn, q, k, v, mask = _inputs()
    v2 = v.clone()
    v2[:, 10:] += 100.0  # keys the first 10 queries must not see
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = multihead_attention(attn, q, k, v, mask)[:, :10]
        b = multihead_attention(attn, q, k, v2, mask)[:, :10]
    assert torch.equal(a, b)
