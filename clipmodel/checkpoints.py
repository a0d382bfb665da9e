"""Read CLIP weights from any supported checkpoint format into an OpenAI-style state dict.

Formats: OpenAI TorchScript archives (only when their SHA256 is a published one, unless
trusted explicitly), plain ``torch.save`` state dicts (``weights_only=True``), open_clip
checkpoints of OpenAI-architecture models, and Hugging Face CLIP directories.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from .build import CheckpointFormatError
from .loaded import LoadedCheckpoint  # noqa: F401  (re-exported)

TRUST_ENV = "CLIPSEARCH_TRUST_TORCHSCRIPT"


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (it carries compiled code), False for a plain torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that training code adds (DDP's ``module.``, ``model.``, ``clip.``)."""
    for prefix in ("module.", "model.", "clip."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _unwrap(obj) -> dict[str, torch.Tensor]:
    """Find the state dict inside a plain checkpoint (bare, or under state_dict/model keys)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointFormatError(
        "the file holds no state dict (expected a dict of tensors, or one under 'state_dict')"
    )


def read_plain(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A plain checkpoint: ``torch.save`` (loaded with ``weights_only=True``) or safetensors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj, fmt = load_file(path), "safetensors"
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            fmt = "open_clip" if isinstance(obj, dict) and "state_dict" in obj else "state_dict"
    except Exception as exc:  # re-raised with the file named
        raise CheckpointFormatError(f"cannot read checkpoint {path}: {exc}") from exc
    sd = _strip_prefixes(_unwrap(obj))
    # open_clip registers the causal mask as a buffer in some versions; it is not a weight.
    sd.pop("attn_mask", None)
    return sd, fmt


def read_torchscript(
    path: Path, sha256: str, known: set[str], trust: bool
) -> dict[str, torch.Tensor]:
    """Parameters of an OpenAI TorchScript archive, refused when its hash is not a published one."""
    if sha256 not in known and not (trust or os.environ.get(TRUST_ENV, "") in ("1", "true", "yes")):
        raise CheckpointFormatError(
            f"{path} is a TorchScript archive whose SHA256 {sha256} is not one of OpenAI's "
            "published checkpoints. TorchScript archives contain code, so unknown ones are not "
            f"loaded. If you trust it, pass trust_archive=True or set {TRUST_ENV}=1; or save its "
            "state_dict with torch.save and load that instead."
        )
    archive = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in archive.state_dict().items()}


OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def read_open_clip_dir(path: Path) -> LoadedCheckpoint:
    """An open_clip hub folder: ``open_clip_config.json`` plus its weights file.

    open_clip builds ``nn.GELU`` unless the model config sets ``quick_gelu``, so the config
    decides the activation (OpenAI-trained weights carry ``quick_gelu: true``).
    """
    import json

    from .download import sha256_file

    weights = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).exists()), None)
    if weights is None:
        raise CheckpointFormatError(
            f"{path} has open_clip_config.json but none of {', '.join(OPEN_CLIP_WEIGHTS)}"
        )
    config = json.loads((path / "open_clip_config.json").read_text())
    model_cfg = config.get("model_cfg", config)
    sd, _ = read_plain(weights)
    activation = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    return LoadedCheckpoint(sd, "open_clip", sha256_file(weights), {"activation": activation})


def read_checkpoint(
    path: str | Path, known_sha256s: set[str], trust_archive: bool = False
) -> LoadedCheckpoint:
    """Read weights from ``path`` (a file, a Hugging Face or open_clip folder), detecting the format."""
    from .download import sha256_file

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir() and (path / "open_clip_config.json").exists():
        return read_open_clip_dir(path)
    if path.is_dir():
        from .convert import read_huggingface

        return read_huggingface(path)
    sha = sha256_file(path)
    if is_torchscript_archive(path):
        sd = read_torchscript(path, sha, known_sha256s, trust_archive)
        return LoadedCheckpoint(sd, "torchscript", sha)
    sd, fmt = read_plain(path)
    return LoadedCheckpoint(sd, fmt, sha)
