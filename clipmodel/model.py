"""CLIP image and text encoders (inference), parameter-compatible with OpenAI's checkpoints.

Module and parameter names follow OpenAI's state dict exactly, so official checkpoints load
without any key remapping. Attention runs through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (  # noqa: F401  (re-exported: the model's building blocks)
    ACTIVATIONS,
    LayerNorm,
    MultiheadSelfAttention,
    QuickGELU,
    ResidualAttentionBlock,
    Transformer,
)
from .resnet import AttentionPool2d, Bottleneck, ModifiedResNet, _resize_pos_embed  # noqa: F401


class VisionTransformer(nn.Module):
    """ViT image encoder: patch embedding, class token, pre/post LayerNorm, projection."""

    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        activation: str = "quick_gelu",
    ):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.patch_size = patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        grid = input_resolution // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def embed_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch embeddings (B, gh * gw, width) of images (B, 3, H, W), and the grid size."""
        x = self.conv1(x.to(self.conv1.weight.dtype))  # (B, width, gh, gw)
        b, _, gh, gw = x.shape
        return x.flatten(2).transpose(1, 2), gh, gw

    def tokens(self, patches: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """The transformer's input: class token plus patches, positions added, pre-LayerNorm."""
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1)
        x = x + _resize_pos_embed(self.positional_embedding, gh, gw).to(x.dtype)
        return self.ln_pre(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token output of the transformer (B, width) -> embedding (B, output_dim)."""
        return self.ln_post(x) @ self.proj

    def forward_patches(self, patches: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """Embeddings from patch embeddings (see :meth:`embed_patches`)."""
        x = self.tokens(patches, gh, gw)
        first = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.head(self.transformer.forward_at(x, first))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_patches(*self.embed_patches(x))

    def forward_dense(self, x: torch.Tensor):
        patches, gh, gw = self.embed_patches(x)
        x, weights = self.transformer(self.tokens(patches, gh, gw), last_weights=True)
        x = self.head(x)
        b = x.shape[0]
        grid = x[:, 1:].reshape(b, gh, gw, -1)
        attn = weights[:, :, 0, 1:].reshape(b, weights.shape[1], gh, gw)
        return x[:, 0], grid, attn


@dataclass(frozen=True)
class CLIPConfig:
    """Hyper-parameters of one CLIP model; ``build_model`` infers them from a state dict."""

    embed_dim: int
    image_resolution: int
    vision_layers: tuple[int, int, int, int] | int
    vision_width: int
    vision_patch_size: int | None
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_heads: int | None = None
    activation: str = "quick_gelu"  # OpenAI's; "gelu" for e.g. LAION open_clip models

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)


@dataclass
class DenseImageOutput:
    """Pooled embedding, per-patch/grid embeddings (B, H, W, D) and final attention (B, heads, H, W)."""

    pooled: torch.Tensor
    grid: torch.Tensor
    attention: torch.Tensor


class CLIP(nn.Module):
    """Contrastive Language-Image Pre-training model (inference) with OpenAI's parameter names."""

    family = "clip"

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.context_length = config.context_length
        if config.is_vit:
            heads = config.vision_heads or config.vision_width // 64
            self.visual = VisionTransformer(
                config.image_resolution,
                config.vision_patch_size,
                config.vision_width,
                config.vision_layers,
                heads,
                config.embed_dim,
                config.activation,
            )
        else:
            heads = config.vision_heads or config.vision_width * 32 // 64
            self.visual = ModifiedResNet(
                tuple(config.vision_layers),
                config.embed_dim,
                heads,
                config.image_resolution,
                config.vision_width,
            )
        if config.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {config.activation!r}"
            )
        self.transformer = Transformer(
            config.transformer_width,
            config.transformer_layers,
            config.transformer_heads,
            config.activation,
        )
        self.vocab_size = config.vocab_size
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(config.context_length, config.transformer_width)
        )
        self.ln_final = LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * 4.6052)  # ln(100)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_resolution(self) -> int:
        return self.config.image_resolution

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image embeddings (unnormalised), shape (B, embed_dim)."""
        return self.visual(image.to(self.dtype))

    def encode_image_dense(self, image: torch.Tensor) -> DenseImageOutput:
        """Pooled embedding plus per-location embeddings and the final attention map.

        ViT: the last block's class-token attention over patches and the projected patch tokens.
        ResNet: the attention pool's query attention over the grid and each cell's value vector
        through the output projection.
        """
        pooled, grid, attn = self.visual.forward_dense(image.to(self.dtype))
        return DenseImageOutput(pooled, grid, attn)

    def encode_text(
        self, text: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Text embeddings (unnormalised) from token ids (B, L), read at each end-of-text token.

        The causal mask already hides padding from the end-of-text position, so
        ``attention_mask`` only decides where the sequence ends when given.
        """
        if text.shape[1] > self.context_length:
            raise ValueError(
                f"token sequence of length {text.shape[1]} exceeds context length "
                f"{self.context_length}"
            )
        if attention_mask is not None:
            eot = attention_mask.long().sum(dim=-1) - 1
        else:
            eot = text.argmax(dim=-1)  # the end-of-text token has the highest id
        # Causal attention: no position sees a later one, so the padding after the longest
        # sequence cannot change any end-of-text output. Dropping it is exact and makes a
        # short query many times cheaper than running all 77 positions.
        n = int(eot.max()) + 1 if eot.numel() else text.shape[1]
        x = self.token_embedding(text[:, :n]).to(self.dtype)
        x = x + self.positional_embedding[:n].to(self.dtype)
        causal = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.ln_final(self.transformer.forward_at(x, eot, mask=causal))
        return x @ self.text_projection.to(x.dtype)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled cosine similarities: (logits_per_image, logits_per_text)."""
        image_features = F.normalize(self.encode_image(image).float(), dim=-1)
        text_features = F.normalize(self.encode_text(text).float(), dim=-1)
        logits_per_image = self.logit_scale.exp().float() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def clip_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss: mean of image->text and text->image cross-entropy."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2
