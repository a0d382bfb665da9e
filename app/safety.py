"""What the browser may ask for: paths inside the library roots, sane uploads, the password.

Every path that reaches the app from outside (``img:`` query terms, the folder filter) or from
the index (records opened by id) goes through :func:`resolve_inside_roots` /
:func:`indexed_file`: resolved with ``os.path.realpath`` and checked against the real paths of
``library.roots``. No function here builds a path from user text without that check.
"""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

PASSWORD_ENV = "CLIPSEARCH_UI_PASSWORD"
_MAX_ID = 2**63 - 1
_MAX_PATH_CHARS = 4096


class UnsafePathError(ValueError):
    """A path or id from the browser that points outside the library (or is malformed)."""


class UploadError(ValueError):
    """An uploaded example photo that is too large or not an image."""


def real_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
    """The library roots with symlinks resolved (what paths are checked against)."""
    return [os.path.realpath(os.fspath(r)) for r in roots]


def is_inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both already absolute and normalised)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or a mix of absolute and relative paths
        return False


def _clean_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise UnsafePathError(f"{what}: expected text")
    text = text.strip()
    if not text:
        raise UnsafePathError(f"{what}: empty path")
    if "\x00" in text or len(text) > _MAX_PATH_CHARS:
        raise UnsafePathError(f"{what}: invalid path")
    return text


def resolve_inside_roots(
    text: str, roots: Sequence[str | os.PathLike], what: str = "path", kind: str = "file"
) -> Path:
    """The real path of ``text`` if it lies inside a library root, else :class:`UnsafePathError`.

    Absolute paths are resolved as they are; a relative path is tried against each root in
    turn. ``kind`` is "file" or "dir": what must exist there.
    """
    text = _clean_text(text, what)
    reals = real_roots(roots)
    candidates = [text] if os.path.isabs(text) else [os.path.join(r, text) for r in reals]
    inside_but_missing = False
    for cand in candidates:
        real = os.path.realpath(cand)
        if not any(is_inside(real, r) for r in reals):
            continue
        ok = os.path.isdir(real) if kind == "dir" else os.path.isfile(real)
        if ok:
            return Path(real)
        inside_but_missing = True
    if inside_but_missing:
        noun = "folder" if kind == "dir" else "file"
        raise UnsafePathError(f"{what}: no such {noun} in the library: {text}")
    raise UnsafePathError(f"{what}: {text} is outside the library folders (library.roots)")


def folder_filter(text: str | None, roots: Sequence[str | os.PathLike]) -> str | None:
    """The folder filter as the search expects it (None: no filter); checked like any path.

    Returns the folder's absolute path *as the index spells it* (under a configured root, not
    symlink-resolved), so it matches the stored image paths.
    """
    if text is None or not text.strip():
        return None
    real = resolve_inside_roots(text, roots, "folder", kind="dir")
    for root in roots:
        root_abs = os.path.abspath(os.fspath(root))
        root_real = os.path.realpath(root_abs)
        if is_inside(str(real), root_real):
            return os.path.normpath(os.path.join(root_abs, os.path.relpath(real, root_real)))
    return str(real)  # pragma: no cover - resolve_inside_roots guarantees a root matched


def parse_image_id(value: object, what: str = "image id") -> int:
    """A positive image id from a query parameter or widget (digits only)."""
    if isinstance(value, bool):
        raise UnsafePathError(f"{what}: expected a number")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise UnsafePathError(f"{what}: expected a number, got {text[:40]!r}")
        number = int(text)
    if not 1 <= number <= _MAX_ID:
        raise UnsafePathError(f"{what}: out of range")
    return number


def indexed_file(
    path: str, roots: Sequence[str | os.PathLike], follow_symlinks: bool = True
) -> Path:
    """The real path of an indexed image, if it is still inside the library.

    The record's own path must lie under a root. Its real path must too, unless
    ``library.follow_symlinks`` is on (then the indexer deliberately followed a symlink that the
    library's owner placed in a root, and the file was indexed from there).
    """
    path = _clean_text(path, "image")
    lexical = os.path.abspath(path)
    roots_abs = [os.path.abspath(os.fspath(r)) for r in roots]
    reals = real_roots(roots)
    real = os.path.realpath(lexical)
    under_root = any(is_inside(lexical, r) for r in roots_abs) or any(
        is_inside(lexical, r) for r in reals
    )
    if not under_root:
        raise UnsafePathError(f"image {path} is outside the library folders")
    if not any(is_inside(real, r) for r in reals) and not follow_symlinks:
        raise UnsafePathError(f"image {path} links outside the library folders")
    return Path(real)


def file_inside(path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``path`` resolved, if it is inside ``folder`` (e.g. a thumbnail in the index folder)."""
    real = os.path.realpath(os.fspath(path))
    if not is_inside(real, os.path.realpath(os.fspath(folder))):
        raise UnsafePathError(f"{path} is outside {folder}")
    return Path(real)


@dataclass(frozen=True)
class UploadInfo:
    """A checked example photo: its bytes, name and size in pixels."""

    data: bytes
    name: str
    width: int
    height: int


def check_upload(data: bytes, name: str, max_mb: int, max_pixels: int) -> UploadInfo:
    """Check an uploaded example photo before anything decodes its pixels."""
    size = len(data)
    if size == 0:
        raise UploadError(f"{name} is empty (0 bytes).")
    if size > max_mb * 1024 * 1024:
        raise UploadError(
            f"{name} is {size / 1024 / 1024:.1f} MB; the largest photo accepted is {max_mb} MB "
            "(setting ui.max_upload_mb)."
        )
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
    except Image.DecompressionBombError:
        raise UploadError(
            f"{name} has far too many pixels; the largest photo accepted is {max_pixels:,} "
            "pixels (setting ui.max_upload_pixels)."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UploadError(
            f"{name} is not an image this app can read (JPEG, PNG, WebP, ...)."
        ) from None
    if width < 1 or height < 1:
        raise UploadError(f"{name} has an invalid size ({width}x{height}).")
    if width * height > max_pixels:
        raise UploadError(
            f"{name} is {width}x{height} = {width * height:,} pixels; the largest photo accepted "
            f"is {max_pixels:,} pixels (setting ui.max_upload_pixels)."
        )
    return UploadInfo(data, name, width, height)


def expected_password(configured: str | None) -> str | None:
    """The password to ask for: $CLIPSEARCH_UI_PASSWORD, else ``ui.password`` (None: none)."""
    return os.environ.get(PASSWORD_ENV) or configured or None


def password_ok(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the typed password with the configured one."""
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))
