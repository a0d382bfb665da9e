"""Models beyond OpenAI's nine, by name (``ViT-B-32/datacomp_xl_s13b_b90k``, ``ViT-B-16-SigLIP2/webli``,
``xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k``, ...): where each one's files are published,
their SHA256, licence and languages.

Files are fetched into ``<cache>/models/<name with / as __>/`` and verified before anything
reads them (clipmodel.download). Hashes: none of these files has a SHA256 that we could
check against a published one while writing this table (no network), except OpenAI's image
checkpoints that M-CLIP pairs with (their published hashes, clipmodel.download), so every
other file is **to be pinned on first verified download**: the first download is hashed and the hash kept
in ``pins.json`` beside the files; every later use must match it (a changed or corrupt file is
refused), and a pin that a later release publishes can be written into ``sha256`` here. A
file placed there by hand (offline) is pinned the same way on first use.

``clipmodel.load(name)`` accepts these names as it accepts OpenAI's; a local file or folder
works as before (``model.weights``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .download import (
    CheckpointUnavailableError,
    ModelSource,
    _exclusive_lock,
    _fetch,
    default_cache_dir,
    download_source,
    is_offline,
    sha256_file,
)

__all__ = ["REGISTRY", "RegisteredModel", "RemoteFile", "fetch", "is_registered", "names"]

LOG = logging.getLogger("clipmodel.registry")
HF = "https://huggingface.co/{repo}/resolve/main/{file}"


@dataclass(frozen=True)
class RemoteFile:
    repo: str  # Hugging Face hub repository ("" with ``source``)
    filename: str
    sha256: str | None = None  # None: pinned on first verified download (see module docs)
    source: str = ""  # a URL elsewhere (OpenAI's image checkpoints for M-CLIP)

    @property
    def url(self) -> str:
        return self.source or HF.format(repo=self.repo, file=self.filename)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    family: str  # clip (OpenAI architecture), siglip, siglip2, xlm-roberta
    files: tuple[RemoteFile, ...]
    licence: str
    languages: str = "English"
    load: str = ""  # the file to load (a weights file), or "" for the folder
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        return self.name.replace("/", "__")


def _open_clip(name: str, repo: str, weights: str = "open_clip_model.safetensors") -> RegisteredModel:
    files = (RemoteFile(repo, "open_clip_config.json"), RemoteFile(repo, weights))
    return RegisteredModel(name, "clip", files, "MIT")


def _siglip(name: str, repo: str, tokenizer: str, family: str) -> RegisteredModel:
    files = tuple(RemoteFile(repo, f) for f in ("config.json", "model.safetensors", tokenizer,
                                                "tokenizer_config.json",
                                                "preprocessor_config.json"))  # fmt: skip
    langs = "English" if family == "siglip" else "multilingual (Gemma tokenizer, WebLI)"
    return RegisteredModel(name, family, files, "Apache-2.0", langs)


def _xlmr(name: str, repo: str, tokenizer_repo: str) -> RegisteredModel:
    files = (RemoteFile(repo, "open_clip_pytorch_model.bin"), RemoteFile(tokenizer_repo, "tokenizer.json"))
    return RegisteredModel(name, "xlm-roberta", files, "MIT", "multilingual (XLM-R, ~100 languages)",
                           load="open_clip_pytorch_model.bin")  # fmt: skip


def _mclip(name: str, repo: str, image: str) -> RegisteredModel:
    """M-CLIP's text tower (its hub folder), XLM-R large's tokenizer and the OpenAI image
    checkpoint it was distilled against, with OpenAI's published hash."""
    from .download import MODELS

    src = MODELS[image]
    files = (RemoteFile(repo, "config.json"), RemoteFile(repo, "pytorch_model.bin"),
             RemoteFile("FacebookAI/xlm-roberta-large", "tokenizer.json"),
             RemoteFile("", src.filename, src.sha256, src.url))  # fmt: skip
    return RegisteredModel(name, "xlm-roberta", files, "MIT (text), MIT (OpenAI image tower)",
                           "multilingual (XLM-R, ~100 languages)")  # fmt: skip


REGISTRY: dict[str, RegisteredModel] = {m.name: m for m in (
    _open_clip("ViT-B-32/laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    _open_clip("ViT-B-32/datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"),
    _open_clip("ViT-B-16/datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K"),
    _open_clip("ViT-L-14/datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"),
    _open_clip("ViT-H-14/laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    _open_clip("ViT-bigG-14/laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
    _siglip("ViT-B-16-SigLIP/webli", "google/siglip-base-patch16-224", "spiece.model", "siglip"),
    _siglip("ViT-SO400M-14-SigLIP-384/webli", "google/siglip-so400m-patch14-384", "spiece.model",
            "siglip"),
    _siglip("ViT-B-16-SigLIP2/webli", "google/siglip2-base-patch16-224", "tokenizer.json", "siglip2"),
    _siglip("ViT-SO400M-16-SigLIP2-384/webli", "google/siglip2-so400m-patch16-384", "tokenizer.json",
            "siglip2"),
    _xlmr("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
          "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "FacebookAI/xlm-roberta-base"),
    _xlmr("xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k",
          "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k",
          "FacebookAI/xlm-roberta-large"),
    _mclip("M-CLIP/XLM-Roberta-Large-Vit-B-32", "M-CLIP/XLM-Roberta-Large-Vit-B-32", "ViT-B/32"),
    _mclip("M-CLIP/XLM-Roberta-Large-Vit-L-14", "M-CLIP/XLM-Roberta-Large-Vit-L-14", "ViT-L/14"),
)}  # fmt: skip


def names() -> list[str]:
    return list(REGISTRY)


def is_registered(name: str) -> bool:
    return name in REGISTRY


def _pins(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / "pins.json").read_text())
    except (OSError, ValueError):
        return {}


def _pin(folder: Path, filename: str, sha: str) -> None:
    pins = {**_pins(folder), filename: sha}
    tmp = folder / f".pins.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True))
    os.replace(tmp, folder / "pins.json")


def _first_download(model: RegisteredModel, f: RemoteFile, folder: Path, progress: bool) -> None:
    """Fetch an unpinned file, hash it and pin the hash (trust on first use, said loudly)."""
    final = folder / f.filename
    with _exclusive_lock(folder / f"{f.filename}.lock"):
        if not final.is_file():
            if is_offline():
                raise CheckpointUnavailableError(
                    f"{model.name}: {final} is missing and CLIPSEARCH_OFFLINE is set. Download "
                    f"{f.url} on another machine and place it there."
                )
            part = folder / f"{f.filename}.part"
            try:
                _fetch(f.url, part, progress, 30.0)
            except OSError as exc:
                raise CheckpointUnavailableError(
                    f"Could not download {f.url} for {model.name}: {type(exc).__name__}: {exc}. "
                    f"Place the file at {final} to use it offline."
                ) from exc
            os.replace(part, final)
        sha = sha256_file(final)
        _pin(folder, f.filename, sha)
    LOG.warning("%s: %s has no published SHA256 in the registry; pinned %s on first use "
                "(%s/pins.json)", model.name, f.filename, sha, folder)  # fmt: skip


def fetch(name: str, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local, verified files of registered model ``name``; returns what to load (its
    folder, or its weights file)."""
    model = REGISTRY[name]
    root = Path(root).expanduser() if root is not None else default_cache_dir()
    folder = root / "models" / model.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    missing = [f for f in model.files if not (folder / f.filename).is_file()]
    if missing and is_offline():
        wanted = "; ".join(f"{f.url} -> {folder / f.filename}" for f in missing)
        raise CheckpointUnavailableError(
            f"model {name!r} is not (completely) in {folder} and CLIPSEARCH_OFFLINE is set, so "
            f"nothing is downloaded. Fetch on another machine and place: {wanted}. Or point "
            "`model.weights` / CLIPSEARCH_WEIGHTS at a local checkpoint."
        )
    for f in model.files:
        sha = f.sha256 or _pins(folder).get(f.filename)
        if sha is None:
            _first_download(model, f, folder, progress)
            continue
        download_source(ModelSource(f"{name} {f.filename}", f.url, sha, f.filename), folder,
                        progress=progress)  # fmt: skip
    return folder / model.load if model.load else folder
