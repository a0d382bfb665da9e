"""Hyper-parameters of OpenAI's nine published CLIP models (what ``build_model`` infers)."""

from __future__ import annotations

from .model import CLIPConfig


def _cfg(embed, res, layers, width, patch, tw, heads):
    return CLIPConfig(
        embed_dim=embed,
        image_resolution=res,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch,
        context_length=77,
        vocab_size=49408,
        transformer_width=tw,
        transformer_heads=heads,
        transformer_layers=12,
    )


OPENAI_CONFIGS: dict[str, CLIPConfig] = {
    "RN50": _cfg(1024, 224, (3, 4, 6, 3), 64, None, 512, 8),
    "RN101": _cfg(512, 224, (3, 4, 23, 3), 64, None, 512, 8),
    "RN50x4": _cfg(640, 288, (4, 6, 10, 6), 80, None, 640, 10),
    "RN50x16": _cfg(768, 384, (6, 8, 18, 8), 96, None, 768, 12),
    "RN50x64": _cfg(1024, 448, (3, 15, 36, 10), 128, None, 1024, 16),
    "ViT-B/32": _cfg(512, 224, 12, 768, 32, 512, 8),
    "ViT-B/16": _cfg(512, 224, 12, 768, 16, 512, 8),
    "ViT-L/14": _cfg(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336px": _cfg(768, 336, 24, 1024, 14, 768, 12),
}
