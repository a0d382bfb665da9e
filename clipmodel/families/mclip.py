"""M-CLIP (``M-CLIP/XLM-Roberta-Large-Vit-B-32`` and kin): an XLM-RoBERTa text tower distilled
onto one of OpenAI's image towers. Its Hugging Face folder (config.json with model_type
"M-CLIP", ``pytorch_model.bin``: ``transformer.*`` and ``LinearTransformation``) holds the text
side only; the image side is the OpenAI checkpoint it was trained against, which must lie in
the same folder under its official file name (e.g. ``ViT-B-32.pt``; the registry puts it
there, verified by OpenAI's published hash). Texts: mean of the last hidden states over the
real tokens, then the linear map (M-CLIP's ``MultilingualCLIP.forward``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..build import CheckpointFormatError
from .xlmr_clip import XlmrCLIP, build

# OpenAI's file names (clipmodel.download) that can carry the image tower.
IMAGE_FILES = ("ViT-B-32.pt", "ViT-B-16.pt", "ViT-L-14.pt", "ViT-L-14-336px.pt")


def image_checkpoint(folder: Path) -> Path:
    found = [folder / n for n in IMAGE_FILES if (folder / n).is_file()]
    if len(found) != 1:
        raise CheckpointFormatError(
            f"{folder}: an M-CLIP folder needs exactly one OpenAI image checkpoint beside the "
            f"text tower (one of {', '.join(IMAGE_FILES)}); found {len(found)}"
        )
    return found[0]


def assemble(text_sd: dict[str, torch.Tensor], image_sd: dict[str, torch.Tensor]) -> dict:
    """One XLM-R CLIP state dict from M-CLIP's text weights and an OpenAI checkpoint's."""
    if "LinearTransformation.weight" not in text_sd:
        raise CheckpointFormatError("not an M-CLIP text tower: no LinearTransformation.weight")
    sd = {k: v for k, v in image_sd.items() if k.startswith("visual.")}
    if "visual.proj" not in sd:
        raise CheckpointFormatError("the M-CLIP image checkpoint has no ViT image tower")
    sd["logit_scale"] = image_sd.get("logit_scale", torch.tensor(4.6052))
    for key, value in text_sd.items():
        if key.startswith("transformer."):
            sd["text." + key] = value
        elif key.startswith("LinearTransformation."):
            sd["text.proj." + key.split(".", 1)[1]] = value
    return sd


def load(folder: Path, config: dict) -> XlmrCLIP:
    from ..checkpoints import read_checkpoint
    from ..convert import _load_weights, weight_files
    from ..download import known_sha256s, sha256_file
    from .text import from_tokenizer_json

    files = weight_files(folder)
    text_sd: dict = {}
    for file in files:
        text_sd.update(_load_weights(file))
    image = read_checkpoint(image_checkpoint(folder), known_sha256s())
    activation = image.overrides.get("activation", "quick_gelu")  # OpenAI's towers
    positions = text_sd["transformer.embeddings.position_embeddings.weight"].shape[0]
    context = positions - 2  # RoBERTa numbers positions from pad_id + 1
    model = build(assemble(text_sd, image.state_dict), {"heads": config.get("num_attention_heads")},
                  activation, context)  # fmt: skip
    width = model.text_config.width
    if config.get("transformerDimensions") not in (None, width):
        raise CheckpointFormatError(
            f"{folder}: transformerDimensions {config['transformerDimensions']} but the "
            f"weights' width is {width}"
        )
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        raise CheckpointFormatError(f"an M-CLIP model needs XLM-R's tokenizer.json in {folder}")
    model.tokenizer = from_tokenizer_json(tok, context, pad_token="<pad>")
    model.checkpoint_sha256 = sha256_file(files[0])
    model.checkpoint_format = "m-clip"
    return model
