"""CLIP's byte-level BPE tokenizer: same vocabulary, cleaning and splitting as OpenAI's."""

from __future__ import annotations

import gzip
import html
import threading
from functools import cached_property, lru_cache
from pathlib import Path

import regex

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# Number of BPE merges used by CLIP (vocabulary 49,408 = 256 bytes x 2 + merges + 2 specials).
_N_MERGES = 49152 - 256 - 2

_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def _byte_alphabet() -> dict[int, str]:
    """Reversible byte -> printable unicode character map (avoids whitespace/control chars)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_PLAIN = regex.compile(r"[ -%'-~]*")  # printable ASCII but "&": nothing for ftfy to repair


def clean(text: str) -> str:
    """ftfy repair, double HTML unescape, whitespace collapse, lower case (as OpenAI's tokenizer)."""
    if not _PLAIN.fullmatch(text):  # ftfy (slow to import) only for text it could change
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """Byte-pair encoder over CLIP's 49,408-token vocabulary."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH):
        self.byte_encoder = _byte_alphabet()
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : _N_MERGES + 1]
        # Merges keyed by their line ("first second": symbols never hold a space), not by
        # split tuples: building the tables takes ~60 ms instead of ~105 (a cold query's).
        lines = [line if line.count(" ") == 1 else " ".join(line.split()) for line in lines]
        symbols = list(self.byte_encoder.values())
        merged = [line.replace(" ", "") for line in lines]
        vocab = symbols + [s + "</w>" for s in symbols] + merged + [SOT, EOT]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.merge_rank = dict(zip(lines, range(len(lines))))
        self.sot_token = self.encoder[SOT]
        self.eot_token = self.encoder[EOT]
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, word: str) -> tuple[str, ...]:
        if word in (SOT, EOT):
            return (word,)
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [a + " " + b for a, b in zip(parts, parts[1:])]
            best = min(pairs, key=lambda pair: self.merge_rank.get(pair, _N_MERGES))
            if best not in self.merge_rank:
                break
            first, second = best.split(" ")
            # Merge every occurrence of this pair, left to right, as the reference does.
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: list[int] = []
        for piece in _SPLIT.findall(clean(text)):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(word))
        return ids

    @cached_property
    def decoder(self) -> dict[int, str]:
        return {i: tok for tok, i in self.encoder.items()}

    @cached_property
    def byte_decoder(self) -> dict[str, int]:
        return {v: k for k, v in self.byte_encoder.items()}

    def decode(self, ids) -> str:
        """Text of token ids (word boundaries become spaces)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


_SHARED: list[Tokenizer] = []
_SHARED_LOCK = threading.Lock()


def get_tokenizer() -> Tokenizer:
    """The shared tokenizer (built once, on first use, not at import; thread-safe, so a
    query process can build it while ONNX Runtime loads a graph, see clipmodel.query)."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(Tokenizer())
        return _SHARED[0]


def tokenize(
    texts: str | list[str],
    context_length: int = 77,
    truncate: bool = False,
    return_attention_mask: bool = False,
):
    """Token ids (N, context_length), zero-padded, as OpenAI's ``clip.tokenize``.

    Text longer than the context raises ``RuntimeError`` (the official behaviour) unless
    ``truncate``, which keeps the start and ends with the end-of-text token. With
    ``return_attention_mask`` returns ``(tokens, mask)`` where mask is 1 on real tokens.
    """
    import torch

    if isinstance(texts, str):
        texts = [texts]
    tok = get_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.int)
    mask = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [tok.sot_token, *tok.encode(text), tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            ids = ids[:context_length]
            ids[-1] = tok.eot_token
        result[i, : len(ids)] = torch.tensor(ids, dtype=torch.int)
        mask[i, : len(ids)] = 1
    return (result, mask) if return_attention_mask else result


def model_tokenizer(model):
    """The tokenizer of ``model``: its own (``model.tokenizer``: SigLIP, XLM-R; see
    clipmodel.families.text) or CLIP's BPE with start/end tokens in the model's context."""
    own = getattr(model, "tokenizer", None)
    if own is not None:
        return own
    return _clip_text_tokenizer(int(getattr(model, "context_length", 77)))


@lru_cache(maxsize=8)
def _clip_text_tokenizer(context_length: int):
    from .families.text import TextTokenizer

    tok = get_tokenizer()
    return TextTokenizer(tok.encode, context_length, 0, [tok.sot_token], [tok.eot_token],
                         source="CLIP BPE")  # fmt: skip


def split_windows(
    texts, encode, width: int, stride: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """Token windows of texts of any length (``encode``: text -> ids, without special tokens),
    and the text each window belongs to. Text that fits ``width`` tokens is one window; longer
    text is cut into windows of ``width`` overlapping by ``stride`` (default half a window)."""
    step = stride or max(1, width // 2)
    windows: list[list[int]] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        ids = encode(text)
        starts = [0] if len(ids) <= width else list(range(0, len(ids) - width + step, step))
        for s in starts:
            windows.append(ids[s : s + width])
            owner.append(i)
    return windows, owner


def text_windows(
    texts, context_length: int = 77, stride: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """:func:`split_windows` with CLIP's BPE: windows of ``context_length - 2`` tokens (the
    start/end tokens are added by :func:`window_tokens`)."""
    return split_windows(texts, get_tokenizer().encode, context_length - 2, stride)


def window_tokens(windows, context_length: int = 77):
    """Zero-padded int32 token rows (N, context_length) of windows, each wrapped in the
    start and end-of-text tokens (a numpy array: no torch)."""
    import numpy as np

    tok = get_tokenizer()
    out = np.zeros((len(windows), context_length), dtype=np.int32)
    for row, ids in enumerate(windows):
        seq = [tok.sot_token, *ids, tok.eot_token]
        out[row, : len(seq)] = seq
    return out
