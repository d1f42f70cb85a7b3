"""A 2D residual U-Net whose state dict is interchangeable with Cellpose 3.x ``CPnet``.

Parameter names and shapes follow Cellpose 3.0-3.1 exactly (``downsample.down.res_down_0.proj.0``,
``upsample.up.res_up_0.conv.conv_1.full``, ``output.2``, ``diam_mean``, ``diam_labels``, ...), so a
Cellpose model file loads with ``strict=True`` and a model we train loads in Cellpose.

Differences from Cellpose's module, none of which change the arithmetic:
- the style vector is a mean over the spatial axes instead of ``avg_pool2d(kernel_size=x.shape)``,
  so a traced/exported graph keeps dynamic height and width;
- no MKLDNN branches;
- ``forward`` returns ``(y, style)`` only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _batchconv(cin: int, cout: int, sz: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=1e-5, momentum=0.05),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, sz, padding=sz // 2),
    )


def _batchconv0(cin: int, cout: int, sz: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=1e-5, momentum=0.05),
        nn.Conv2d(cin, cout, sz, padding=sz // 2),
    )


class ResDown(nn.Module):
    def __init__(self, cin: int, cout: int, sz: int):
        super().__init__()
        self.conv = nn.Sequential()
        self.proj = _batchconv0(cin, cout, 1)
        for t in range(4):
            self.conv.add_module(f"conv_{t}", _batchconv(cin if t == 0 else cout, cout, sz))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.conv[1](self.conv[0](x))
        return x + self.conv[3](self.conv[2](x))


class Downsample(nn.Module):
    def __init__(self, nbase: Sequence[int], sz: int):
        super().__init__()
        self.down = nn.Sequential()
        self.maxpool = nn.MaxPool2d(2, stride=2)
        for n in range(len(nbase) - 1):
            self.down.add_module(f"res_down_{n}", ResDown(nbase[n], nbase[n + 1], sz))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xd: list[torch.Tensor] = []
        for n, block in enumerate(self.down):
            xd.append(block(x if n == 0 else self.maxpool(xd[n - 1])))
        return xd


class BatchConvStyle(nn.Module):
    def __init__(self, cin: int, cout: int, style_channels: int, sz: int):
        super().__init__()
        self.conv = _batchconv(cin, cout, sz)
        self.full = nn.Linear(style_channels, cout)

    def forward(self, style: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is not None:
            x = x + y
        feat = self.full(style)[:, :, None, None]
        return self.conv(x + feat)


class ResUp(nn.Module):
    def __init__(self, cin: int, cout: int, style_channels: int, sz: int):
        super().__init__()
        self.conv = nn.Sequential()
        self.conv.add_module("conv_0", _batchconv(cin, cout, sz))
        for t in (1, 2, 3):
            self.conv.add_module(f"conv_{t}", BatchConvStyle(cout, cout, style_channels, sz))
        self.proj = _batchconv0(cin, cout, 1)

    def forward(self, x, y, style):
        x = self.proj(x) + self.conv[1](style, self.conv[0](x), y=y)
        return x + self.conv[3](style, self.conv[2](style, x))


class Upsample(nn.Module):
    def __init__(self, nbase: Sequence[int], sz: int):
        super().__init__()
        self.upsampling = nn.Upsample(scale_factor=2, mode="nearest")
        self.up = nn.Sequential()
        for n in range(1, len(nbase)):
            self.up.add_module(f"res_up_{n - 1}", ResUp(nbase[n], nbase[n - 1], nbase[-1], sz))

    def forward(self, style, xd):
        x = self.up[-1](xd[-1], xd[-1], style)
        for n in range(len(self.up) - 2, -1, -1):
            x = self.upsampling(x)
            x = self.up[n](x, xd[n], style)
        return x


class CPnet(nn.Module):
    """Cellpose-3-compatible U-Net.

    Parameters
    ----------
    nbase : sequence of int
        ``[nchan, c1, c2, c3, c4]``; Cellpose 3 uses ``[2, 32, 64, 128, 256]``.
    nout : int
        Output channels (3: Y flow, X flow, cell probability).
    sz : int
        Convolution kernel size (3).
    diam_mean : float
        Diameter objects are rescaled to during training; stored in the state dict.

    ``forward(x)`` takes ``(B, nchan, H, W)`` float32 with H, W multiples of 8 and returns
    ``y (B, nout, H, W)`` and ``style (B, nbase[-1])``.
    """

    def __init__(self, nbase: Sequence[int] = (2, 32, 64, 128, 256), nout: int = 3,
                 sz: int = 3, diam_mean: float = 30.0):
        super().__init__()
        nbase = list(nbase)
        self.nchan = nbase[0]
        self.nbase = nbase
        self.nout = nout
        self.sz = sz
        self.downsample = Downsample(nbase, sz)
        nbaseup = nbase[1:] + [nbase[-1]]
        self.upsample = Upsample(nbaseup, sz)
        self.output = _batchconv(nbaseup[0], nout, 1)
        self.diam_mean = nn.Parameter(torch.ones(1) * diam_mean, requires_grad=False)
        self.diam_labels = nn.Parameter(torch.ones(1) * diam_mean, requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xd = self.downsample(x)
        style = xd[-1].mean(dim=(2, 3))
        style = style / torch.sum(style ** 2, dim=1, keepdim=True) ** 0.5
        y = self.output(self.upsample(style, xd))
        return y, style


def nbase_from_state_dict(state_dict: dict) -> list[int]:
    """Infer ``[nchan, c1, ..., cK]`` from a CPnet state dict's downsampling convolutions."""
    nbase = []
    k = 0
    while f"downsample.down.res_down_{k}.proj.1.weight" in state_dict:
        w = state_dict[f"downsample.down.res_down_{k}.proj.1.weight"]
        if k == 0:
            nbase.append(int(w.shape[1]))
        nbase.append(int(w.shape[0]))
        k += 1
    return nbase


def widen_state_dict(state_dict: dict, nbase: Sequence[int], *, scale: float = 0.1,
                     seed: int = 0) -> dict:
    """A state dict for a wider ``CPnet(nbase)`` that computes nearly what ``state_dict`` computes.

    Every width of ``nbase`` must be at least the original's (``nchan`` equal). The original
    weights fill the leading channels. A new channel reads the old and new channels with
    Cellpose's random initialisation times ``scale`` and is read by no old channel (those weights
    are zero), so the old channels, and the output, are unchanged except through the style
    vector's normalisation, which now also counts the small new channels of the deepest level.
    New batch-norm channels start as identity (weight 1, bias 0, mean 0, variance 1). Training
    from here grows the new channels (Net2Net-style widening, Chen et al. 2016).
    """
    old_nbase = nbase_from_state_dict(state_dict)
    nbase = list(nbase)
    if len(nbase) != len(old_nbase) or nbase[0] != old_nbase[0] or any(
            n < o for n, o in zip(nbase, old_nbase)):
        raise ValueError(f"nbase {nbase} cannot widen {old_nbase}: same depth and channels, "
                         "no width smaller")
    torch.manual_seed(seed)
    wide = CPnet(nbase, int(state_dict["output.2.weight"].shape[0]),
                 int(state_dict["downsample.down.res_down_0.conv.conv_0.2.weight"].shape[-1]))
    out = {}
    for name, new in wide.state_dict().items():
        old = state_dict[name]
        if new.shape == old.shape:
            out[name] = old.clone()
            continue
        t = new.clone()
        if name.endswith("running_var") or (name.endswith("weight") and t.ndim == 1):
            t.fill_(1.0)  # batch-norm scale and variance: identity on new channels
        elif t.ndim == 1:
            t.zero_()  # biases, batch-norm shift and mean
        else:
            t.mul_(scale)
            if t.shape[1] > old.shape[1]:
                t[:old.shape[0], old.shape[1]:] = 0  # no old channel reads a new one
        t[tuple(slice(0, s) for s in old.shape)] = old
        out[name] = t
    return out
