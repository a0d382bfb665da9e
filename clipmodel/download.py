"""Download, cache and verify CLIP checkpoints.

Files are cached under :func:`default_cache_dir` and are only ever handed out after their
SHA256 matched the expected hash, so nothing unverified is deserialised. Downloads stream into
``<file>.part`` (resumed with HTTP ``Range`` after an interruption) and are atomically renamed
into place; an exclusive ``<file>.lock`` serialises concurrent downloads of the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms: no cross-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MODELS",
    "CheckpointUnavailableError",
    "ChecksumMismatchError",
    "ModelSource",
    "available_models",
    "default_cache_dir",
    "download",
    "download_source",
    "is_offline",
    "known_sha256s",
    "register_model",
    "sha256_file",
]

CHUNK_SIZE = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class CheckpointUnavailableError(RuntimeError):
    """The checkpoint is not cached and cannot be downloaded (offline or network failure)."""


class ChecksumMismatchError(RuntimeError):
    """A downloaded file does not have the expected SHA256."""


@dataclass(frozen=True)
class ModelSource:
    """A downloadable checkpoint: model name, URL, expected SHA256 and cache file name."""

    name: str
    url: str
    sha256: str
    filename: str


_OPENAI_URLS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}


def _source(name: str, url: str, sha256: str, filename: str | None = None) -> ModelSource:
    sha = sha256.strip().lower()
    if not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"sha256 for {name!r} must be 64 hex characters, got {sha256!r}")
    if not name:
        raise ValueError("model name must not be empty")
    filename = filename or os.path.basename(urllib.parse.urlsplit(url).path)
    if not filename or filename in (".", "..") or "/" in filename or "\\" in filename:
        raise ValueError(f"cannot derive a plain cache file name for {name!r} from {url!r}")
    return ModelSource(name, url, sha, filename)


# The SHA256 of each official file is the URL path segment before the file name.
MODELS: dict[str, ModelSource] = {
    name: _source(name, url, url.rsplit("/", 2)[-2]) for name, url in _OPENAI_URLS.items()
}


def available_models() -> list[str]:
    """Names of all downloadable models: the 9 official ones first, then registered ones."""
    return list(MODELS)


def register_model(name: str, url: str, sha256: str, filename: str | None = None) -> None:
    """Add (or replace) a downloadable checkpoint, e.g. a mirror or a fine-tune."""
    MODELS[name] = _source(name, url, sha256, filename)


def known_sha256s() -> set[str]:
    """SHA256 hashes (lower-case hex) of every file in the model table."""
    return {m.sha256 for m in MODELS.values()}


def default_cache_dir() -> Path:
    """``$CLIPSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/clip``, else ``~/.cache/clip``."""
    if os.environ.get("CLIPSEARCH_CACHE_DIR"):
        return Path(os.environ["CLIPSEARCH_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "clip"
    return Path("~/.cache/clip").expanduser()


def is_offline() -> bool:
    """True when ``CLIPSEARCH_OFFLINE`` is 1/true/yes (case-insensitive)."""
    return os.environ.get("CLIPSEARCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def sha256_file(path: str | Path) -> str:
    """Hex SHA256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _alternatives(src: ModelSource, final: Path) -> str:
    return (
        f"To use it without network access, download {src.url} on another machine and place it "
        f"at {final} (sha256 {src.sha256}), or point `model.weights` in config.yaml or the "
        "CLIPSEARCH_WEIGHTS environment variable at a local checkpoint file."
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, resuming from its current size when possible."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "clipsearch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part is complete or bad
            e.close()
            return
        raise
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise ConnectionError(f"server answered Range bytes={offset}- with a bad range")
            mode = "ab"
        else:  # 200: the server ignored the Range header, start over
            offset, mode = 0, "wb"
        total = offset + total if total is not None else None
        received = offset
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK_SIZE):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def download(
    name: str, root: str | Path | None = None, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Return the path of the verified checkpoint ``name`` in ``root``, downloading if needed.

    Raises ``ValueError`` for an unknown name, ``CheckpointUnavailableError`` when offline
    without a cached copy or on network failure (a partial download is kept for resuming) and
    ``ChecksumMismatchError`` when the downloaded bytes do not match the expected SHA256.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available models: {available_models()}")
    return download_source(MODELS[name], root, progress=progress, timeout=timeout)


def download_source(
    src: ModelSource, root: str | Path | None = None, *, progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """:func:`download` of one :class:`ModelSource` (also the model registry's files)."""
    name = src.name
    root = Path(root).expanduser() if root is not None else default_cache_dir()
    final = root / src.filename

    if is_offline():
        if not final.is_file():
            raise CheckpointUnavailableError(
                f"CLIP checkpoint {name!r} is not cached at {final} and CLIPSEARCH_OFFLINE is "
                f"set, so it will not be downloaded. {_alternatives(src, final)}"
            )
        actual = sha256_file(final)
        if actual != src.sha256:
            raise CheckpointUnavailableError(
                f"The cached file {final} for CLIP checkpoint {name!r} has sha256 {actual}, "
                f"expected {src.sha256}, and CLIPSEARCH_OFFLINE is set, so it will not be "
                f"downloaded again. {_alternatives(src, final)}"
            )
        return final

    if final.is_file() and sha256_file(final) == src.sha256:
        return final
    root.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    with _exclusive_lock(final.with_name(final.name + ".lock")):
        if final.is_file():  # re-check: another process may have finished meanwhile
            actual = sha256_file(final)
            if actual == src.sha256:
                return final
            warnings.warn(
                f"{final} has sha256 {actual}, expected {src.sha256}; deleting it and "
                "downloading again",
                stacklevel=2,
            )
            final.unlink()
        import http.client  # here, not at import: a query process never downloads

        try:
            _fetch(src.url, part, progress, timeout)
        except (OSError, http.client.HTTPException) as e:
            kept = f"The partial file {part} is kept and will be resumed. " if part.exists() else ""
            raise CheckpointUnavailableError(
                f"Could not download CLIP checkpoint {name!r} from {src.url} to {final}: "
                f"{type(e).__name__}: {e}. {kept}{_alternatives(src, final)} "
                "Set CLIPSEARCH_OFFLINE=1 to never try the network."
            ) from e
        actual = sha256_file(part)
        if actual != src.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"Downloaded {src.url} has sha256 {actual} but {src.sha256} was expected; the "
                "corrupt file was deleted. Retry, or check the URL/mirror."
            )
        os.replace(part, final)
        _fsync_dir(root)
    return final
