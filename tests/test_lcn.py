"""Locally connected layers against a slow reference, and the lcn1d/lcn2d recipes."""

import pytest
import torch
import torch.nn.functional as F

from locallearn.models import build_model
from locallearn.models.lcn import LocallyConnected1d, LocallyConnected2d


def slow_lc1d(layer: LocallyConnected1d, x: torch.Tensor) -> torch.Tensor:
    """Explicit loop over output positions: position p sees x[:, :, p*s : p*s+k] (padded)."""
    x = F.pad(x, (layer.padding, layer.padding))
    w = layer.weight.view(layer.out_length, layer.out_channels, layer.in_channels, -1)
    outs = []
    for p in range(layer.out_length):
        window = x[:, :, p * layer.stride : p * layer.stride + layer.kernel_size]  # (B, C, K)
        y = torch.einsum("bck,ock->bo", window, w[p])
        outs.append(y + layer.bias[:, p])
    return torch.stack(outs, dim=2)


def slow_lc2d(layer: LocallyConnected2d, x: torch.Tensor) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    x = F.pad(x, (pw, pw, ph, ph))
    ho, wo = layer.out_size
    w = layer.weight.view(ho * wo, layer.out_channels, layer.in_channels, kh, kw)
    out = torch.zeros(x.shape[0], layer.out_channels, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            window = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            p = i * wo + j
            out[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", window, w[p]) + layer.bias[:, p]
    return out


@pytest.mark.parametrize(
    "channels,out,length,kernel,stride,padding",
    [(1, 4, 40, 5, 2, 1), (3, 5, 11, 3, 1, 0), (2, 3, 9, 3, 3, 2), (4, 2, 7, 7, 1, 0)],
)
def test_lc1d_matches_the_loop_reference(channels, out, length, kernel, stride, padding):
    torch.manual_seed(0)
    layer = LocallyConnected1d(channels, out, length, kernel, stride=stride, padding=padding)
    x = torch.randn(6, channels, length)
    y = layer(x)
    assert y.shape == (6, out, (length + 2 * padding - kernel) // stride + 1)
    torch.testing.assert_close(y, slow_lc1d(layer, x))


@pytest.mark.parametrize(
    "channels,out,size,kernel,stride,padding",
    [
        (1, 4, (8, 8), 3, 2, 1),
        (3, 2, (7, 5), 3, 1, 0),
        (2, 3, (6, 9), (2, 3), (2, 1), (1, 0)),
        (2, 2, (5, 5), 5, 1, 2),
    ],
)
def test_lc2d_matches_the_loop_reference(channels, out, size, kernel, stride, padding):
    torch.manual_seed(0)
    layer = LocallyConnected2d(channels, out, size, kernel, stride=stride, padding=padding)
    x = torch.randn(4, channels, *size)
    y = layer(x)
    assert y.shape == (4, out, *layer.out_size)
    torch.testing.assert_close(y, slow_lc2d(layer, x))


def test_lc_with_one_filter_copied_everywhere_is_a_convolution():
    # Sharing restored by hand: the same filter at every position gives Conv1d's output.
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(3, 4, 5, stride=2, padding=1)
    layer = LocallyConnected1d(3, 4, 20, 5, stride=2, padding=1)
    with torch.no_grad():
        layer.weight.copy_(conv.weight.reshape(4, -1).expand_as(layer.weight))
        layer.bias.copy_(conv.bias[:, None].expand_as(layer.bias))
    x = torch.randn(2, 3, 20)
    torch.testing.assert_close(layer(x), conv(x))


def test_filters_are_not_shared():
    # A loss that reads one output position trains that position's filter only.
    torch.manual_seed(2)
    for layer, x, pick in [
        (LocallyConnected1d(2, 3, 12, 3, stride=1, padding=1), torch.randn(4, 2, 12), (5,)),
        (LocallyConnected2d(2, 3, (6, 6), 3, stride=1, padding=1), torch.randn(4, 2, 6, 6), (2, 4)),
    ]:
        y = layer(x)
        y[(slice(None), slice(None), *pick)].sum().backward()
        grad = layer.weight.grad.flatten(1).abs().sum(1)  # per position
        position = pick[0] if len(pick) == 1 else pick[0] * layer.out_size[1] + pick[1]
        assert grad[position] > 0
        others = torch.cat([grad[:position], grad[position + 1 :]])
        assert torch.all(others == 0), "a filter at another position received a gradient"
        # Changing another position's filter leaves the picked output unchanged.
        before = layer(x)[(slice(None), slice(None), *pick)].detach()
        with torch.no_grad():
            layer.weight[(position + 1) % layer.weight.shape[0]] += 1.0
        after = layer(x)[(slice(None), slice(None), *pick)]
        torch.testing.assert_close(before, after)


def test_lcn1d_mirrors_cnn1d():
    lcn, cnn = build_model("lcn1d", (1, 40), 10), build_model("cnn1d", (1, 40), 10)
    layers = [m for m in lcn.modules() if isinstance(m, LocallyConnected1d)]
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in layers
    ] == [
        (c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs
    ]
    assert [m.out_length for m in layers] == [19, 10, 5]
    assert len(lcn) == len(cnn) == 4
    # Weights per position: 19*25*5 + 10*25*75 + 5*25*75, biases per position, linear 125->10.
    expected = 19 * 25 * (5 + 1) + 10 * 25 * (75 + 1) + 5 * 25 * (75 + 1) + 125 * 10 + 10
    assert sum(p.numel() for p in lcn.parameters()) == expected
    assert lcn(torch.randn(3, 1, 40)).shape == (3, 10)


def test_lcn2d_shapes_and_width():
    net = build_model("lcn2d", (1, 8, 8), 10, width=6)
    layers = [m for m in net.modules() if isinstance(m, LocallyConnected2d)]
    assert [m.out_size for m in layers] == [(4, 4), (2, 2), (1, 1)]
    assert [m.out_channels for m in layers] == [6, 6, 6]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert build_model("lcn2d", (3, 32, 32), 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
