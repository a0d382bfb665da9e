"""Read Hugging Face ``transformers`` CLIP checkpoints into OpenAI's state-dict layout.

A Hugging Face CLIP directory holds ``config.json`` (``model_type`` "clip") and the weights as
``model.safetensors`` or ``pytorch_model.bin``, or as shards listed in a ``*.index.json``.
Keys are renamed to OpenAI's, the separate q/k/v projections are packed into
``in_proj_weight``/``in_proj_bias`` and the Linear projections are transposed. Settings our
model cannot run (other activations, LayerNorm eps, MLP ratios) are refused by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .build import CheckpointFormatError
from .loaded import LoadedCheckpoint

# Weight files in order of preference: (single file, shard index).
WEIGHT_FILES = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
# transformers' CLIPTextConfig / CLIPVisionConfig defaults, for configs that omit a setting.
_DEFAULTS = {
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
}
_COMMON_DEFAULTS = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}

# Non-layer keys: Hugging Face name -> (OpenAI name, transpose).
_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": ("token_embedding.weight", False),
    "text_model.embeddings.position_embedding.weight": ("positional_embedding", False),
    "text_model.final_layer_norm.weight": ("ln_final.weight", False),
    "text_model.final_layer_norm.bias": ("ln_final.bias", False),
    "vision_model.embeddings.class_embedding": ("visual.class_embedding", False),
    "vision_model.embeddings.patch_embedding.weight": ("visual.conv1.weight", False),
    "vision_model.embeddings.position_embedding.weight": ("visual.positional_embedding", False),
    "vision_model.pre_layrnorm.weight": ("visual.ln_pre.weight", False),
    "vision_model.pre_layrnorm.bias": ("visual.ln_pre.bias", False),
    "vision_model.post_layernorm.weight": ("visual.ln_post.weight", False),
    "vision_model.post_layernorm.bias": ("visual.ln_post.bias", False),
    "visual_projection.weight": ("visual.proj", True),
    "text_projection.weight": ("text_projection", True),
    "logit_scale": ("logit_scale", False),
}
_LAYER = re.compile(r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
_TOWER_PREFIX = {"text": "transformer.resblocks.", "vision": "visual.transformer.resblocks."}
_IN_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)$")


def _tower_config(config: dict, tower: str) -> dict:
    """One tower's settings (``text_config``/``vision_config``) with transformers' defaults."""
    given = config.get(tower) or config.get(f"{tower}_dict") or {}
    return {**_COMMON_DEFAULTS, **_DEFAULTS[tower], **given}


def check_config(config: dict, where: Path | str = "config.json") -> dict[str, int]:
    """Refuse settings our model cannot run; return the head-count overrides for ``build_model``."""
    if config.get("model_type") != "clip":
        raise CheckpointFormatError(
            f"{where}: model_type {config.get('model_type')!r} is not supported; only full "
            "Hugging Face CLIP models (model_type 'clip', both towers) can be loaded"
        )
    for tower in ("text_config", "vision_config"):
        cfg = _tower_config(config, tower)
        if cfg["hidden_act"] not in ("quick_gelu", "gelu"):
            raise CheckpointFormatError(
                f"{where}: {tower}.hidden_act is {cfg['hidden_act']!r}; clipmodel runs "
                "'quick_gelu' (OpenAI's activation) or 'gelu'"
            )
        if abs(float(cfg["layer_norm_eps"]) - 1e-5) > 1e-12:
            raise CheckpointFormatError(
                f"{where}: {tower}.layer_norm_eps is {cfg['layer_norm_eps']}; clipmodel uses 1e-5"
            )
        if cfg["intermediate_size"] != 4 * cfg["hidden_size"]:
            raise CheckpointFormatError(
                f"{where}: {tower}.intermediate_size {cfg['intermediate_size']} is not 4 x "
                f"hidden_size {cfg['hidden_size']}; clipmodel's MLP ratio is fixed at 4"
            )
    acts = {_tower_config(config, t)["hidden_act"] for t in ("text_config", "vision_config")}
    if len(acts) > 1:
        raise CheckpointFormatError(
            f"{where}: the text and vision towers use different hidden_act values {sorted(acts)}; "
            "clipmodel needs one activation for both"
        )
    return {
        "activation": acts.pop(),
        "vision_heads": int(_tower_config(config, "vision_config")["num_attention_heads"]),
        "transformer_heads": int(_tower_config(config, "text_config")["num_attention_heads"]),
    }


def convert_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``CLIPModel`` state dict to OpenAI's keys (q/k/v packed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    leftover = []
    for key, value in hf.items():
        if key.endswith("position_ids"):  # a buffer of 0..n-1, not a weight
            continue
        if key in _TOP_LEVEL:
            name, transpose = _TOP_LEVEL[key]
            out[name] = value.t().contiguous() if transpose else value
        elif m := _LAYER.match(key):
            prefix = f"{_TOWER_PREFIX[m.group(1)]}{m.group(2)}."
            rest = m.group(3)
            if q := _QKV.match(rest):
                hf_prefix = key[: -len(rest)]
                qkv.setdefault((prefix, hf_prefix, q.group(2)), {})[q.group(1)] = value
                continue
            module, _, param = rest.rpartition(".")
            if module in _IN_LAYER:
                out[f"{prefix}{_IN_LAYER[module]}.{param}"] = value
            else:
                leftover.append(key)
        else:
            leftover.append(key)
    if leftover:
        raise CheckpointFormatError(
            f"unrecognised Hugging Face CLIP keys: {', '.join(sorted(leftover)[:20])}"
            + (" ..." if len(leftover) > 20 else "")
        )
    for (prefix, hf_prefix, param), parts in sorted(qkv.items()):
        absent = [f"{hf_prefix}self_attn.{p}_proj.{param}" for p in "qkv" if p not in parts]
        if absent:
            raise CheckpointFormatError(
                f"incomplete attention projections: missing {', '.join(absent)}"
            )
        out[f"{prefix}attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    """One safetensors or torch pickle (``weights_only=True``) weights file."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointFormatError(f"cannot read weights file {file}: {exc}") from exc
    if not isinstance(sd, dict):
        raise CheckpointFormatError(f"{file} holds a {type(sd).__name__}, not a state dict")
    return sd


def weight_files(path: Path) -> list[Path]:
    """The weights files of a Hugging Face directory (several when sharded), preferred format first."""
    for single, index in WEIGHT_FILES:
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            weight_map = json.loads((path / index).read_text()).get("weight_map") or {}
            shards = [path / name for name in sorted(set(weight_map.values()))]
            absent = [s.name for s in shards if not s.is_file()]
            if not shards or absent:
                raise CheckpointFormatError(
                    f"{path / index}: shards missing: {', '.join(absent) or '(the index lists none)'}"
                )
            return shards
    wanted = ", ".join(name for pair in WEIGHT_FILES for name in pair)
    present = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise CheckpointFormatError(
        f"no weights file in Hugging Face directory {path}: expected one of {wanted} "
        f"(found {present})"
    )


def read_huggingface(path: Path) -> LoadedCheckpoint:
    """Read a Hugging Face CLIP directory as an OpenAI-layout checkpoint with head-count overrides.

    ``sha256`` is the hash of the weights file (the first shard when sharded).
    """
    from .download import sha256_file

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointFormatError(
            f"{path} is a directory without config.json; expected a Hugging Face CLIP model "
            "directory (saved with save_pretrained), or pass a checkpoint file instead"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {config_file}: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{config_file} is not a JSON object")
    overrides = check_config(config, config_file)
    files = weight_files(path)
    hf: dict[str, torch.Tensor] = {}
    for file in files:
        hf.update(_load_weights(file))
    return LoadedCheckpoint(convert_state_dict(hf), "huggingface", sha256_file(files[0]), overrides)
