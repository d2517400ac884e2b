"""Feature-map <-> token helpers: same values as the plain NCHW route, channels-last kept, dense gradients."""

from __future__ import annotations

import pytest
import torch

from rtdetr.nn.layers import ConvNormLayer
from rtdetr.nn.memory_format import dense_grad, flatten_hw, is_channels_last, unflatten_hw

CL = torch.channels_last


@pytest.mark.parametrize("channels_last", [False, True])
def test_flatten_unflatten_round_trip(channels_last):
    x = torch.randn(2, 5, 3, 4)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    tokens = flatten_hw(x)
    assert torch.equal(tokens, x.flatten(2).permute(0, 2, 1))  # [B, h*w, C], row-major tokens
    if channels_last:
        assert tokens.data_ptr() == x.data_ptr()  # a view, no copy
    back = unflatten_hw(tokens.contiguous(), 3, 4, channels_last=channels_last)
    assert torch.equal(back, x)
    assert is_channels_last(back) == channels_last
    assert back.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)


def test_is_channels_last_ignores_ambiguous_maps():
    assert not is_channels_last(torch.randn(2, 3, 1, 1).contiguous(memory_format=CL))  # both layouts at once
    assert not is_channels_last(torch.randn(2, 3))
    assert is_channels_last(torch.randn(2, 3, 4, 4).contiguous(memory_format=CL))


def test_dense_grad_makes_cat_slices_dense_and_keeps_values():
    a = torch.randn(2, 4, 5, 5).contiguous(memory_format=CL).requires_grad_()
    b = torch.randn(2, 3, 5, 5).contiguous(memory_format=CL)
    seen = {}

    def keep(g):
        seen["grad"] = g

    a_dense = dense_grad(a)
    a_dense.register_hook(keep)  # the gradient as the cat hands it over: a channel slice
    out = torch.cat([a_dense, b], dim=1)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    assert not seen["grad"].is_contiguous(memory_format=CL)  # the case dense_grad is for
    assert a.grad.is_contiguous(memory_format=CL)
    assert torch.equal(a.grad, weight[:, :4])
    assert torch.equal(a_dense, a)


def test_dense_grad_is_identity_without_autograd():
    x = torch.randn(2, 3, 4, 4)
    assert dense_grad(x) is x
    y = x.clone().requires_grad_()
    with torch.no_grad():
        assert dense_grad(y) is y


def test_in_place_relu_gives_the_out_of_place_gradients():
    torch.manual_seed(0)
    layer = ConvNormLayer(3, 4, 3, act="relu").train()
    assert layer.act.inplace
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    layer(x).square().sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    torch.relu(layer.norm(layer.conv(x))).square().sum().backward()
    for g, ref in zip(got, [x.grad] + [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(g, ref, atol=0, rtol=0)
