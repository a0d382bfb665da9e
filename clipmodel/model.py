"""CLIP image and text encoders (inference), parameter-compatible with OpenAI's checkpoints.

Module and parameter names follow OpenAI's state dict exactly, so official checkpoints load
without any key remapping. Attention runs through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
