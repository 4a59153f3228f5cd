"""A small, normalisation-free 3D U-Net; returns logits (one contract: networks never apply activations).

No BatchNorm/GroupNorm: every layer is conv + bias + LeakyReLU. The output at a voxel then
depends only on the HU in its receptive field -- not on the statistics of the batch or of the
patch -- so absolute HU survives, training patches and sliding-window tiles behave the same and
overlapping tiles agree. The nets are shallow (2 convs x 4 levels) and train fine with Adam
and He initialisation without normalisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet3D`; serialised into checkpoints (``asdict``).

    ``channels[i]`` features at level ``i`` (level ``i`` has stride ``2**i``); inputs must have
    each spatial size divisible by ``2 ** (len(channels) - 1)`` (see :attr:`divisor`).
    ``out_bias`` initialises the output biases (e.g. a low heat-map prior).
    """

    in_channels: int = 1
    out_channels: int = 1
    channels: tuple[int, ...] = (8, 16, 32, 64)
    negative_slope: float = 0.01
    out_bias: tuple[float, ...] = ()

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(slope, inplace=True),
                         nn.Conv3d(cout, cout, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class UNet3D(nn.Module):
    """(B, in_channels, D, H, W) -> logits (B, out_channels, D, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch, slope = config.channels, config.negative_slope
        self.down = nn.ModuleList([_Block(config.in_channels, ch[0], slope)] +
                                  [_Block(ch[i - 1], ch[i], slope) for i in range(1, len(ch))])
        self.pool = nn.ModuleList([nn.Conv3d(ch[i], ch[i], 2, stride=2) for i in range(len(ch) - 1)])
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in range(len(ch) - 1)])
        self.dec = nn.ModuleList([_Block(2 * ch[i], ch[i], slope) for i in range(len(ch) - 1)])
        self.head = nn.Conv3d(ch[0], config.out_channels, 1)
        self._init(slope)

    def _init(self, slope: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=1e-3)
        if self.config.out_bias:
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor(self.config.out_bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pool):
                skips.append(x)
                x = F.leaky_relu(self.pool[i](x), self.config.negative_slope)
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)                          # (B, ch[i], 2D, 2H, 2W)
            x = self.dec[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)
