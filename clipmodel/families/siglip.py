"""SigLIP and SigLIP2 (inference), in Hugging Face's parameter names (``SiglipModel`` /
``Siglip2Model`` state dicts load without renaming).

Both: a ViT without class token whose output is pooled by a learned probe attending over
the patches (multi-head attention-pooling head), a text transformer read at its last position
(texts are padded to the full context, as they were trained), and sigmoid logits
``sigmoid(exp(logit_scale) * cos + logit_bias)``. SigLIP2's patch embedding is a linear map of
flattened patches (row, column, colour) and its position grid may be resized (bilinear,
antialiased, as transformers does); here images come at the grid's native size, where the
resize is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MultiheadSelfAttention
from .blocks import MLP, Encoder, key_mask


@dataclass(frozen=True)
class SiglipConfig:
    """Hyper-parameters of one SigLIP/SigLIP2 model (shapes inferred, heads from config.json)."""

    family: str  # "siglip" or "siglip2"
    image_resolution: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    vision_act: str
    vision_eps: float
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp: int
    text_act: str
    text_eps: float
    vocab_size: int
    context_length: int
    embed_dim: int

    @property
    def grid(self) -> int:
        return self.image_resolution // self.patch_size


class VisionEmbeddings(nn.Module):
    def __init__(self, c: SiglipConfig):
        super().__init__()
        self.linear = c.family == "siglip2"
        self.patch_size = c.patch_size
        if self.linear:
            self.patch_embedding = nn.Linear(3 * c.patch_size**2, c.vision_width)
        else:
            self.patch_embedding = nn.Conv2d(3, c.vision_width, c.patch_size, c.patch_size)
        self.position_embedding = nn.Embedding(c.grid**2, c.vision_width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        w = self.patch_embedding.weight
        if self.linear:  # (B, 3, H, W) -> (B, patches, P*P*3), the processor's patch layout
            b, ch, h, wd = image.shape
            p = self.patch_size
            x = image.reshape(b, ch, h // p, p, wd // p, p).permute(0, 2, 4, 3, 5, 1)
            x = self.patch_embedding(x.reshape(b, (h // p) * (wd // p), p * p * ch).to(w.dtype))
        else:
            x = self.patch_embedding(image.to(w.dtype)).flatten(2).transpose(1, 2)
        if x.shape[1] != self.position_embedding.num_embeddings:
            raise ValueError(
                f"image gives {x.shape[1]} patches; the model's position grid has "
                f"{self.position_embedding.num_embeddings} (input must be its native size)"
            )
        return x + self.position_embedding.weight.to(x.dtype)


class PoolingHead(nn.Module):
    """A learned probe attends over every patch, then LayerNorm + MLP with a residual."""

    def __init__(self, c: SiglipConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, c.vision_width))
        self.attention = MultiheadSelfAttention(c.vision_width, c.vision_heads)
        self.layernorm = nn.LayerNorm(c.vision_width, eps=c.vision_eps)
        self.mlp = MLP(c.vision_width, c.vision_mlp, c.vision_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.to(x.dtype).expand(x.shape[0], -1, -1)
        h = self.attention.forward_query(x, probe)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class VisionTower(nn.Module):
    def __init__(self, c: SiglipConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(c)
        self.encoder = Encoder(c.vision_layers, c.vision_width, c.vision_heads, c.vision_mlp,
                               c.vision_act, c.vision_eps)  # fmt: skip
        self.post_layernorm = nn.LayerNorm(c.vision_width, eps=c.vision_eps)
        self.head = PoolingHead(c)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.post_layernorm(self.encoder(self.embeddings(image))))


class TextEmbeddings(nn.Module):
    def __init__(self, c: SiglipConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.position_embedding = nn.Embedding(c.context_length, c.text_width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        return self.token_embedding(ids) + self.position_embedding.weight[:n]


class TextTower(nn.Module):
    def __init__(self, c: SiglipConfig):
        super().__init__()
        self.embeddings = TextEmbeddings(c)
        self.encoder = Encoder(c.text_layers, c.text_width, c.text_heads, c.text_mlp, c.text_act,
                               c.text_eps)  # fmt: skip
        self.final_layer_norm = nn.LayerNorm(c.text_width, eps=c.text_eps)
        self.head = nn.Linear(c.text_width, c.embed_dim)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x = self.embeddings(ids)
        x = self.encoder(x, key_mask(attention_mask, x.dtype))
        return self.head(self.final_layer_norm(x[:, -1]))


class SigLIP(nn.Module):
    """SigLIP / SigLIP2 with the ``encode_image`` / ``encode_text`` of :class:`~clipmodel.CLIP`."""

    family = "siglip"

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.config = config
        self.family = config.family
        self.context_length = config.context_length
        self.vision_model = VisionTower(config)
        self.text_model = TextTower(config)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_resolution(self) -> int:
        return self.config.image_resolution

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image embeddings (unnormalised), (B, embed_dim), of (B, 3, R, R) normalised images."""
        return self.vision_model(image.to(self.dtype))

    def encode_text(
        self, text: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Text embeddings (unnormalised) of token ids (B, context_length), read at the last
        position. The models were trained on texts padded to the context without a mask, so
        ``attention_mask`` is only applied when given (transformers does the same)."""
        if text.shape[1] > self.context_length:
            raise ValueError(
                f"token sequence of length {text.shape[1]} exceeds context length "
                f"{self.context_length}"
            )
        return self.text_model(text.long(), attention_mask)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigmoid logits (logits_per_image, logits_per_text): scale * cosine + bias."""
        img = F.normalize(self.encode_image(image).float(), dim=-1)
        txt = F.normalize(self.encode_text(text).float(), dim=-1)
        logits = img @ txt.t() * self.logit_scale.exp().float() + self.logit_bias.float()
        return logits, logits.t()
