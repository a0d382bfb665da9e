"""Model families beside OpenAI's CLIP: SigLIP and SigLIP2 (Hugging Face folders), open_clip's
XLM-RoBERTa multilingual models (open_clip checkpoints) and M-CLIP (an XLM-R text tower beside
an OpenAI image checkpoint). Each loader infers the architecture
from the tensors' shapes, checks it loudly, and attaches the model's own tokenizer
(``model.tokenizer``, clipmodel.families.text) and preprocessing (``model.image_spec``).

OpenAI-architecture checkpoints (OpenAI's, LAION's and DataComp's open_clip models) stay
with clipmodel.build: they are CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["detect_folder", "load_folder", "load_xlmr", "FAMILIES"]

FAMILIES = ("clip", "siglip", "siglip2", "xlm-roberta")  # M-CLIP runs as xlm-roberta


def _json(file: Path) -> dict:
    from ..build import CheckpointFormatError

    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{file} is not a JSON object")
    return data


def detect_folder(path: Path) -> str | None:
    """The family of a model folder that is not OpenAI's architecture, else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "config.json").is_file() and not (path / "open_clip_config.json").is_file():
        model_type = _json(path / "config.json").get("model_type")
        if model_type in ("siglip", "siglip2", "M-CLIP"):
            return model_type
    return None


def load_folder(path: Path, family: str):
    """A SigLIP / SigLIP2 / M-CLIP model from a Hugging Face folder, with its tokenizer and
    preprocessing."""
    from ..convert import _load_weights, weight_files
    from ..download import sha256_file
    from . import siglip_load

    path = Path(path)
    config = _json(path / "config.json")
    if family == "M-CLIP":
        from ..preprocess import ImageSpec
        from . import mclip, xlmr_clip

        model = mclip.load(path, config)
        model.image_spec = ImageSpec(model.image_resolution)
        model.architecture = "M-CLIP " + xlmr_clip.describe(model)
        return model
    files = weight_files(path)
    sd: dict = {}
    for file in files:
        sd.update(_load_weights(file))
    model = siglip_load.build(sd, config, str(path / "config.json"))
    del sd
    model.tokenizer = siglip_load.tokenizer(path, model.config)
    model.image_spec = siglip_load.image_spec(path, model.config)
    model.checkpoint_sha256 = sha256_file(files[0])
    model.checkpoint_format = f"huggingface {family}"
    # in fp32, before any lower-precision copy: (exp(logit_scale), logit_bias)
    model.sigmoid_calibration = (float(model.logit_scale.detach().exp()),
                                 float(model.logit_bias.detach()))  # fmt: skip
    model.architecture = siglip_load.describe(model.config)
    return model


def _tokenizer_file(path: Path) -> Path:
    from ..build import CheckpointFormatError

    folder = path if path.is_dir() else path.parent
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise CheckpointFormatError(
            f"an XLM-R model needs its tokenizer: put XLM-RoBERTa's tokenizer.json in {folder}"
        )
    return file


def load_xlmr(state_dict: dict, path: Path, sha256: str, overrides: dict):
    """An open_clip XLM-R model from its state dict; tokenizer.json from the same folder."""
    from ..preprocess import ImageSpec
    from . import xlmr_clip
    from .text import from_tokenizer_json

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg = _json(folder / "open_clip_config.json") if (folder / "open_clip_config.json").is_file() else {}
    model_cfg = cfg.get("model_cfg", cfg)
    text_cfg = dict(model_cfg.get("text_cfg") or {})
    context = int(text_cfg.get("context_length", 77))
    activation = overrides.get("activation") or ("quick_gelu" if model_cfg.get("quick_gelu") else "gelu")
    model = xlmr_clip.build(state_dict, text_cfg, activation, context)
    model.tokenizer = from_tokenizer_json(_tokenizer_file(path), context, pad_token="<pad>")
    if model.tokenizer.pad_id != model.text_config.pad_id:
        from ..build import CheckpointFormatError

        raise CheckpointFormatError(
            f"the tokenizer pads with id {model.tokenizer.pad_id}, the text tower with "
            f"{model.text_config.pad_id}"
        )
    pre = cfg.get("preprocess_cfg") or {}
    res = model.image_resolution
    kwargs = {k: tuple(pre[k]) for k in ("mean", "std") if pre.get(k)}
    model.image_spec = ImageSpec(res, crop=pre.get("resize_mode", "shortest") != "squash", **kwargs)
    model.checkpoint_sha256 = sha256
    model.checkpoint_format = "open_clip xlm-roberta"
    model.architecture = xlmr_clip.describe(model)
    return model
