"""Transformer blocks in Hugging Face's parameter names (q/k/v/out projections, fc1/fc2), for
the towers of the non-OpenAI families (SigLIP, SigLIP2). Attention runs through SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Hugging Face ``hidden_act`` names -> the functions they denote (transformers' ACT2FN).
ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def activation(name: str):
    """The function a Hugging Face ``hidden_act`` names, or a ValueError naming the ones run."""
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; clipmodel runs {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (HF ``SiglipAttention``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (split_heads(p(x), self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, width: int, heads: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = Attention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, hidden, act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(width, heads, hidden, act, eps) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


def key_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 1/0 -> an additive (B, 1, 1, L) mask hiding the 0 keys (None stays None)."""
    if attention_mask is None:
        return None
    hidden = (attention_mask[:, None, None, :] == 0).to(dtype)
    return hidden * torch.finfo(dtype).min
