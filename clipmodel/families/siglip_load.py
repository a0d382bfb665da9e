"""Read a Hugging Face SigLIP / SigLIP2 folder (``save_pretrained`` of ``SiglipModel`` or
``Siglip2Model``): the architecture from the tensors' shapes, head counts, activations and
epsilons from config.json (checked against the shapes), the tokenizer and the preprocessing
from the files beside it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..build import CheckpointFormatError
from ..preprocess import ImageSpec
from .checks import adopt, agree, count_indices, need
from .siglip import SigLIP, SiglipConfig
from .text import TextTokenizer, from_sentencepiece, from_tokenizer_json

MODEL_TYPES = ("siglip", "siglip2")
_TOWER_DEFAULTS = {"num_attention_heads": 12, "hidden_act": "gelu_pytorch_tanh",
                   "layer_norm_eps": 1e-6}  # fmt: skip


def _tower(config: dict, name: str) -> dict:
    return {**_TOWER_DEFAULTS, **(config.get(name) or {})}


def infer_config(sd: dict[str, torch.Tensor], config: dict, where: str) -> SiglipConfig:
    """The architecture of the weights ``sd``, checked against ``config`` (config.json)."""
    family = config.get("model_type")
    v, t = "vision_model.", "text_model."
    need(sd, [v + "embeddings.patch_embedding.weight", v + "embeddings.position_embedding.weight",
              v + "post_layernorm.weight", v + "head.probe", t + "embeddings.token_embedding.weight",
              t + "embeddings.position_embedding.weight", t + "final_layer_norm.weight",
              t + "head.weight", "logit_scale", "logit_bias"], family)  # fmt: skip
    patch_w = sd[v + "embeddings.patch_embedding.weight"]
    if family == "siglip2":
        if patch_w.ndim != 2:
            raise CheckpointFormatError(f"{where}: a SigLIP2 patch embedding is linear (2-D)")
        patch = round((patch_w.shape[1] / 3) ** 0.5)
        if 3 * patch * patch != patch_w.shape[1]:
            raise CheckpointFormatError(f"{where}: patch embedding input {patch_w.shape[1]} != 3*P*P")
    else:
        if patch_w.ndim != 4:
            raise CheckpointFormatError(f"{where}: a SigLIP patch embedding is a convolution")
        patch = patch_w.shape[-1]
    positions = sd[v + "embeddings.position_embedding.weight"].shape[0]
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise CheckpointFormatError(f"{where}: {positions} positions are not a square grid")
    vc, tc = _tower(config, "vision_config"), _tower(config, "text_config")
    width = sd[v + "post_layernorm.weight"].shape[0]
    text_width = sd[t + "final_layer_norm.weight"].shape[0]
    embed = sd[t + "head.weight"].shape[0]
    layer = r"\.encoder\.layers\.(\d+)\."
    c = SiglipConfig(
        family=family, image_resolution=grid * patch, patch_size=patch, vision_width=width,
        vision_layers=count_indices(sd, "vision_model" + layer),
        vision_heads=int(vc["num_attention_heads"]),
        vision_mlp=sd[v + "encoder.layers.0.mlp.fc1.weight"].shape[0] if
        v + "encoder.layers.0.mlp.fc1.weight" in sd else sd[v + "head.mlp.fc1.weight"].shape[0],
        vision_act=vc["hidden_act"], vision_eps=float(vc["layer_norm_eps"]),
        text_width=text_width, text_layers=count_indices(sd, "text_model" + layer),
        text_heads=int(tc["num_attention_heads"]),
        text_mlp=sd[t + "encoder.layers.0.mlp.fc1.weight"].shape[0] if
        t + "encoder.layers.0.mlp.fc1.weight" in sd else 4 * text_width,
        text_act=tc["hidden_act"], text_eps=float(tc["layer_norm_eps"]),
        vocab_size=sd[t + "embeddings.token_embedding.weight"].shape[0],
        context_length=sd[t + "embeddings.position_embedding.weight"].shape[0], embed_dim=embed,
    )  # fmt: skip
    for tower, cfg, shapes in (
        ("vision_config", vc, {"hidden_size": width, "patch_size": patch,
                               "intermediate_size": c.vision_mlp,
                               "num_hidden_layers": c.vision_layers}),
        ("text_config", tc, {"hidden_size": text_width, "vocab_size": c.vocab_size,
                             "intermediate_size": c.text_mlp,
                             "num_hidden_layers": c.text_layers,
                             "max_position_embeddings": c.context_length}),
    ):  # fmt: skip
        for key, value in shapes.items():
            agree(where, f"{tower}.{key}", cfg.get(key), value)
    if family == "siglip":
        agree(where, "vision_config.image_size", vc.get("image_size"), c.image_resolution)
    else:
        agree(where, "vision_config.num_patches", vc.get("num_patches"), positions)
    if embed != width:
        raise CheckpointFormatError(
            f"{where}: the text head gives {embed} dims but the image tower {width}; "
            "the two embeddings must have one size"
        )
    return c


def image_spec(folder: Path, c: SiglipConfig) -> ImageSpec:
    """Resize (without crop) to the native grid; mean/std and the resampling filter from
    preprocessor_config.json (SigLIP's 0.5/0.5 and bicubic when absent). A size there other
    than the position grid's is refused."""
    cfg = {}
    file = folder / "preprocessor_config.json"
    if file.is_file():
        cfg = json.loads(file.read_text())
    size = cfg.get("size") or {}
    for key in ("height", "width", "shortest_edge"):
        if key in size and int(size[key]) != c.image_resolution:
            raise CheckpointFormatError(
                f"{file}: size {size} but the model's position grid is {c.image_resolution} px"
            )
    mean = tuple(cfg.get("image_mean") or (0.5, 0.5, 0.5))
    std = tuple(cfg.get("image_std") or (0.5, 0.5, 0.5))
    resample = {2: "bilinear", 3: "bicubic"}.get(int(cfg.get("resample", 3)))
    if resample is None:
        raise CheckpointFormatError(f"{file}: resample {cfg['resample']} is not supported")
    return ImageSpec(c.image_resolution, mean, std, crop=False, resample=resample)


def tokenizer(folder: Path, c: SiglipConfig) -> TextTokenizer:
    """SigLIP: ``spiece.model`` (sentencepiece, canonical text); SigLIP2 (whatever its
    model_type): Gemma's ``tokenizer.json``, lower-cased as it was trained."""
    if (folder / "spiece.model").is_file():
        return from_sentencepiece(folder / "spiece.model", c.context_length)
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise CheckpointFormatError(
            f"{folder}: no tokenizer: SigLIP needs spiece.model, SigLIP2 its tokenizer.json"
        )
    return from_tokenizer_json(file, c.context_length, lowercase=True)


def build(sd: dict[str, torch.Tensor], config: dict, where: str) -> SigLIP:
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    c = infer_config(sd, config, where)
    with torch.device("meta"):
        model = SigLIP(c)
    return adopt(model, sd, describe(c))


def describe(c: SiglipConfig) -> str:
    return (f"[{c.family} ViT width {c.vision_width} x {c.vision_layers} layers, patch "
            f"{c.patch_size}, {c.image_resolution}px; text width {c.text_width} x "
            f"{c.text_layers} layers, context {c.context_length}; embed {c.embed_dim}]")  # fmt: skip
