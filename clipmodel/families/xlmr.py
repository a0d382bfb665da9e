"""An XLM-RoBERTa text tower (inference) in Hugging Face's parameter names (``XLMRobertaModel``),
with the pooling and projection of open_clip's ``HFTextEncoder`` and of M-CLIP: the mean of the
last hidden states over the real tokens, then a linear or two-layer MLP projection."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import activation, key_mask, merge_heads, split_heads


@dataclass(frozen=True)
class XlmrConfig:
    width: int
    layers: int
    heads: int
    mlp: int
    vocab_size: int
    positions: int  # max_position_embeddings (514 for XLM-R: padding_idx + 1 + 512)
    pad_id: int
    eps: float
    act: str
    proj: str  # "mlp", "linear" or "none"
    proj_hidden: int
    embed_dim: int
    token_types: int = 1
    proj_bias: bool = False  # M-CLIP's LinearTransformation has one, open_clip's proj not


class _SelfAttention(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.heads = c.heads
        self.query, self.key = nn.Linear(c.width, c.width), nn.Linear(c.width, c.width)
        self.value = nn.Linear(c.width, c.width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (split_heads(p(x), self.heads) for p in (self.query, self.key, self.value))
        return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


class _DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BERT's post-LayerNorm sub-layer output."""

    def __init__(self, n_in: int, width: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(n_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        setattr(self, "self", _SelfAttention(c))  # noqa: B010 - HF's key name is "self"
        self.output = _DenseNorm(c.width, c.width, c.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.dense = nn.Linear(c.width, c.mlp)
        self.act = activation(c.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.mlp, c.width, c.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.layers))


class _Embeddings(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.pad_id = c.pad_id
        self.word_embeddings = nn.Embedding(c.vocab_size, c.width)
        self.position_embeddings = nn.Embedding(c.positions, c.width)
        self.token_type_embeddings = nn.Embedding(c.token_types, c.width)
        self.LayerNorm = nn.LayerNorm(c.width, eps=c.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # RoBERTa numbers real tokens from pad_id + 1 and gives padding pad_id
        positions = torch.cumsum(mask, dim=1) * mask + self.pad_id
        x = self.word_embeddings(ids) + self.position_embeddings(positions)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


class XlmrTransformer(nn.Module):
    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids, mask)
        keys = key_mask(mask, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, keys)
        return x


class XlmrText(nn.Module):
    """open_clip's HFTextEncoder over XLM-R: mean pooling, then ``proj``."""

    def __init__(self, c: XlmrConfig):
        super().__init__()
        self.config = c
        self.transformer = XlmrTransformer(c)
        if c.proj == "mlp":
            self.proj = nn.Sequential(nn.Linear(c.width, c.proj_hidden, bias=False), nn.GELU(),
                                      nn.Linear(c.proj_hidden, c.embed_dim, bias=False))  # fmt: skip
        elif c.proj == "linear":
            self.proj = nn.Linear(c.width, c.embed_dim, bias=c.proj_bias)
        else:
            self.proj = nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.config.pad_id).long()
        # Padding is masked out of every attention and of the mean: trimming the columns
        # after the longest text changes nothing and saves their work.
        n = max(1, int(mask.sum(dim=1).max())) if ids.numel() else ids.shape[1]
        ids, mask = ids[:, :n], mask[:, :n]
        h = self.transformer(ids, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.proj((h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1))
