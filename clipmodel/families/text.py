"""Tokenizers of the non-OpenAI families, on well-kept libraries: Hugging Face ``tokenizers``
(a ``tokenizer.json``: XLM-RoBERTa, Gemma for SigLIP2) or ``sentencepiece`` (SigLIP's
``spiece.model``). No segmentation is written here; what this module adds is what each
reference tokenizer class adds around the library: SigLIP's text canonicalisation
(transformers' ``SiglipTokenizer``: lower case, punctuation removed, whitespace collapsed),
SigLIP2's lower case (``Siglip2Tokenizer``), the special tokens, truncation and padding to
the model's context.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


def siglip_canonical(text: str) -> str:
    """big_vision's / ``SiglipTokenizer.canonicalize_text``: lower case, ASCII punctuation
    removed, whitespace runs made one space, stripped."""
    return _SPACES.sub(" ", text.lower().translate(_PUNCTUATION)).strip()


class TextTokenizer:
    """Text -> token ids (N, context_length) for one model: ``prefix + ids + suffix``, cut to
    the context (the specials kept) and padded with ``pad_id`` on ``padding_side``."""

    def __init__(self, encode: Callable[[str], list[int]], context_length: int, pad_id: int,
                 prefix: Sequence[int] = (), suffix: Sequence[int] = (),
                 padding_side: str = "right", source: str = ""):  # fmt: skip
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        self._encode = encode
        self.context_length = int(context_length)
        self.pad_id = int(pad_id)
        self.prefix, self.suffix = list(prefix), list(suffix)
        self.padding_side = padding_side
        self.source = source
        if self.width < 1:
            raise ValueError(f"context {context_length} leaves no room beside the special tokens")

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source}, context {self.context_length})"

    def __deepcopy__(self, memo):  # immutable: the fast paths' model copies share it
        return self

    @property
    def width(self) -> int:
        """Content tokens that fit the context beside the special tokens."""
        return self.context_length - len(self.prefix) - len(self.suffix)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self._encode(text))

    def wrap(self, ids: Sequence[int]) -> list[int]:
        """Special tokens around content ids cut to :attr:`width`."""
        return self.prefix + list(ids[: self.width]) + self.suffix

    def pad(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Wrapped rows -> (N, context_length) int64, padded with ``pad_id``."""
        out = torch.full((len(rows), self.context_length), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            t = torch.tensor(list(row), dtype=torch.long)
            if self.padding_side == "right":
                out[i, : len(t)] = t
            else:
                out[i, self.context_length - len(t) :] = t
        return out

    def __call__(self, texts: str | Sequence[str], truncate: bool = True) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for text in texts:
            ids = self.encode(text)
            if len(ids) > self.width and not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {self.context_length}")
            rows.append(self.wrap(ids))
        return self.pad(rows)


def _special_layout(tok) -> tuple[list[int], list[int]]:
    """The ids a tokenizer.json's post-processor puts before and after the content."""
    probe = "a b"
    bare = tok.encode(probe, add_special_tokens=False).ids
    full = tok.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError("cannot tell where the post-processor puts the special tokens")


def _tokenizer_config(folder: Path) -> dict:
    file = folder / "tokenizer_config.json"
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {file}: {exc}") from exc


def from_tokenizer_json(file: str | Path, context_length: int, *, lowercase: bool = False,
                        pad_token: str | None = None, padding_side: str | None = None
                        ) -> TextTokenizer:  # fmt: skip
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``). ``lowercase`` puts a Lowercase
    normaliser first (as ``Siglip2Tokenizer`` does); padding side and pad token come from a
    ``tokenizer_config.json`` beside it, else the arguments, else right and ``<pad>``."""
    from tokenizers import Tokenizer, normalizers

    file = Path(file)
    tok = Tokenizer.from_file(str(file))
    if lowercase:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Lowercase()] + ([tok.normalizer] if tok.normalizer else [])
        )
    cfg = _tokenizer_config(file.parent)
    pad = cfg.get("pad_token") or pad_token or "<pad>"
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = tok.token_to_id(pad)
    if pad_id is None:
        raise ValueError(f"{file}: pad token {pad!r} is not in the vocabulary")
    prefix, suffix = _special_layout(tok)
    side = cfg.get("padding_side") or padding_side or "right"
    return TextTokenizer(lambda t: tok.encode(t, add_special_tokens=False).ids, context_length,
                         pad_id, prefix, suffix, side, f"tokenizers {file.name}")  # fmt: skip


def from_sentencepiece(file: str | Path, context_length: int, *,
                       canonical: Callable[[str], str] | None = siglip_canonical
                       ) -> TextTokenizer:  # fmt: skip
    """SigLIP's ``spiece.model`` (``sentencepiece``): canonicalised text, ``</s>`` appended,
    padded with ``</s>`` (transformers' ``SiglipTokenizer`` defaults)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(file))
    eos = sp.piece_to_id("</s>")
    if sp.id_to_piece(eos) != "</s>":
        raise ValueError(f"{file}: no </s> piece")
    fix = canonical or (lambda t: t)
    return TextTokenizer(lambda t: sp.encode(fix(t)), context_length, eos, (), (eos,), "right",
                         f"sentencepiece {Path(file).name}")  # fmt: skip
