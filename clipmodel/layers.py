"""The transformer layers of CLIP's towers (OpenAI's parameter names): LayerNorm, QuickGELU,
multi-head self-attention, residual attention blocks and the block stack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 for fp16 inputs (as OpenAI's, for stability).

    fp32 and bf16 inputs go straight to the kernel, which accumulates in fp32 either way;
    skipping the round trip saves two copies per call in bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        orig = x.dtype
        out = F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )
        return out.to(orig)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # (B, L, D) -> (B, H, L, D/H)
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


def _attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention probabilities (B, H, Lq, Lk); only used when maps are requested."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask.float()
    return scores.softmax(dim=-1)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with a packed input projection (``in_proj_weight``) as in nn.MultiheadAttention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))
        weights = None
        if need_weights:
            weights = _attention_weights(q, k, mask)
            out = (weights.to(v.dtype)) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(_merge_heads(out)), weights

    def forward_query(
        self, x: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention output for the positions in ``query`` (B, Lq, D) over all of ``x``."""
        width = x.shape[-1]
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:width], b[:width])
        k, v = F.linear(x, w[width:], b[width:]).chunk(2, dim=-1)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(_merge_heads(out))


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", ACTIVATIONS[activation]())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNorm(width)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.ln_1(x), mask, need_weights)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, weights

    def forward_at(
        self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output (B, D) at one position per sequence, ``index`` (B,).

        Keys and values still come from every position, but the query, the output projection
        and the MLP run for the selected position alone: the same result as ``forward`` read
        at ``index``, for a fraction of the work.
        """
        rows = torch.arange(x.shape[0], device=x.device)
        h = self.ln_1(x)
        if mask is not None:  # (L, L) -> each selected position's row, per sequence and head
            mask = mask[index].unsqueeze(1).unsqueeze(1)
        y = x[rows, index].unsqueeze(1)
        y = y + self.attn.forward_query(h, h[rows, index].unsqueeze(1), mask)
        y = y + self.mlp(self.ln_2(y))
        return y[:, 0]


class Transformer(nn.Module):
    """A stack of pre-LN residual attention blocks over (batch, sequence, width) tensors."""

    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, activation) for _ in range(layers)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, last_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None
        for i, block in enumerate(self.resblocks):
            x, weights = block(x, mask, last_weights and i == self.layers - 1)
        return x, weights

    def forward_at(
        self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The output (B, D) at one position per sequence, ``index`` (B,): the last block
        computes that position alone (a ViT-B saves about 7% of its work; exact)."""
        for block in self.resblocks[:-1]:
            x, _ = block(x, mask)
        return self.resblocks[-1].forward_at(x, index, mask)
