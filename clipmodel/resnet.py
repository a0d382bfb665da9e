"""CLIP's modified ResNet image tower (OpenAI's parameter names): anti-aliased bottlenecks and
attention pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import _attention_weights, _merge_heads, _split_heads


class Bottleneck(nn.Module):
    """ResNet bottleneck; strided blocks downsample with an average pool (anti-aliasing)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Keys "downsample.0" (conv) and "downsample.1" (bn), as in OpenAI's checkpoints.
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module(
                "0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)
            )
            self.downsample.add_module("1", nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """QKV attention pooling of a feature map, queried by its (position-embedded) mean."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"attention pool width {embed_dim} is not divisible by {num_heads} heads"
            )
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5
        )
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor, dense: bool = False):
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + _resize_pos_embed(self.positional_embedding, h, w).to(x.dtype)
        q = _split_heads(self.q_proj(x[:, :1]), self.num_heads)
        k = _split_heads(self.k_proj(x), self.num_heads)
        v = _split_heads(self.v_proj(x), self.num_heads)
        if not dense:
            out = F.scaled_dot_product_attention(q, k, v)
            return self.c_proj(_merge_heads(out))[:, 0]
        weights = _attention_weights(q, k, None)
        pooled = self.c_proj(_merge_heads(weights.to(v.dtype) @ v))[:, 0]
        # Per-location features: each position's value vector through the output projection.
        grid = self.c_proj(_merge_heads(v[:, :, 1:])).view(b, h, w, -1)
        attn = weights[:, :, 0, 1:].reshape(b, self.num_heads, h, w)
        return pooled, grid, attn


def _resize_pos_embed(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubically resize a (1 + S*S, D) positional embedding to an h x w grid (no-op when equal)."""
    side = math.isqrt(int(pos.shape[0]) - 1)
    if (int(h), int(w)) == (side, side):
        return pos
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: 3-conv stem with average pool, anti-aliased strides, attention pooling."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        output_dim: int,
        heads: int,
        input_resolution: int = 224,
        width: int = 64,
    ):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        mods = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        mods += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.trunk(x))

    def forward_dense(self, x: torch.Tensor):
        return self.attnpool(self.trunk(x), dense=True)
