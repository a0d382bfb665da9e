"""Infer a CLIP architecture from a state dict's tensor shapes and build the model from it."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .model import CLIP, CLIPConfig

# Entries that TorchScript archives carry beside the parameters; they are not weights.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointFormatError(ValueError):
    """The state dict is not a CLIP checkpoint this loader understands."""


def _count_indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {m.group(1) for k in state_dict if (m := rx.match(k))}
    return len(found)


def infer_config(state_dict: Mapping[str, torch.Tensor], **overrides) -> CLIPConfig:
    """Hyper-parameters of the CLIP model whose weights are ``state_dict`` (as OpenAI's build_model).

    ``overrides`` set fields that shapes cannot tell (e.g. head counts of non-OpenAI checkpoints).
    """
    required = (
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "text_projection",
    )
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointFormatError(
            f"not a CLIP checkpoint: missing {', '.join(missing)} "
            f"(found {len(state_dict)} entries, e.g. {', '.join(list(state_dict)[:5])})"
        )
    vit = "visual.proj" in state_dict
    if vit:
        conv = state_dict["visual.conv1.weight"]
        vision_width = conv.shape[0]
        patch = conv.shape[-1]
        vision_layers: int | tuple[int, ...] = _count_indices(
            state_dict, r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$"
        )
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = patch * grid
    else:
        if "visual.attnpool.positional_embedding" not in state_dict:
            raise CheckpointFormatError(
                "not a CLIP checkpoint: neither a ViT ('visual.proj') nor a ResNet "
                "('visual.attnpool.positional_embedding') image encoder found"
            )
        vision_layers = tuple(
            _count_indices(state_dict, rf"visual\.layer{b}\.(\d+)\.") for b in (1, 2, 3, 4)
        )
        vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        out_width = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = out_width * 32
        patch = None
    transformer_width = state_dict["ln_final.weight"].shape[0]
    config = dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_width // 64,
        transformer_layers=_count_indices(state_dict, r"transformer\.resblocks\.(\d+)\."),
    )
    config.update(overrides)
    return CLIPConfig(**config)


def build_model(state_dict: Mapping[str, torch.Tensor], **overrides) -> CLIP:
    """Build a CLIP model in fp32 eval mode from ``state_dict``, validating every key and shape.

    Raises ``CheckpointFormatError`` naming missing, unexpected or mis-shaped entries.
    """
    sd = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    config = infer_config(sd, **overrides)
    with torch.device("meta"):  # no memory: the checkpoint's tensors are adopted below
        model = CLIP(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mis_shaped = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in sd and sd[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(
            f"missing keys: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(unexpected[:20])}"
            + (" ..." if len(unexpected) > 20 else "")
        )
    if mis_shaped:
        problems.append(f"shape mismatches: {'; '.join(mis_shaped[:10])}")
    if problems:
        raise CheckpointFormatError(
            f"checkpoint does not match the inferred architecture {describe(config)}: "
            + " | ".join(problems)
        )
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=True
    )
    return model.float().eval()


def describe(config: CLIPConfig) -> str:
    """A one-line human description of an architecture."""
    if config.is_vit:
        vision = (
            f"ViT width {config.vision_width} x {config.vision_layers} layers, "
            f"patch {config.vision_patch_size}"
        )
    else:
        vision = f"ResNet {list(config.vision_layers)} width {config.vision_width}"
    return (
        f"[{vision}, {config.image_resolution}px; text width {config.transformer_width} x "
        f"{config.transformer_layers} layers; embed {config.embed_dim}]"
    )
