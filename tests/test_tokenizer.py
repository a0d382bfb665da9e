"""Token ids identical to OpenAI's SimpleTokenizer on >= 1,000 varied strings."""

from __future__ import annotations

import random

import pytest
import torch

import clipmodel as clip
from clipmodel.tokenizer import get_tokenizer

from .reference import reference_tokenizer

PIECES = [
    "café",
    "naïve",
    "Straße",
    "Ærøskøbing",
    "東京タワー",
    "北京",
    "서울의 밤",
    "Москва",
    "مرحبا بالعالم",
    "שלום",
    "नमस्ते",
    "ελληνικά",
    "🐶",
    "🏖️",
    "👨‍👩‍👧‍👦",
    "🇫🇷",
    "❤️",
    "&amp;",
    "&lt;b&gt;",
    "&quot;hi&quot;",
    "&#39;",
    "&nbsp;",
    "&amp;amp;",
    "<|startoftext|>",
    "<|endoftext|>",
    "don't",
    "it's",
    "we're",
    "they've",
    "I'm",
    "you'll",
    "he'd",
    "O'Brien",
    "rock'n'roll",
    "3.14159",
    "1,000,000",
    "42",
    "2024-05-01",
    "e-mail",
    "t-shirt",
    "x-ray",
    "C++",
    "#hashtag",
    "@user",
    "http://example.com/a?b=c",
    "snake_case",
    "CamelCaseWord",
    "!!!",
    "...",
    "?!",
    "—",
    "–",
    "«quoted»",
    "“smart quotes”",
    "‘single’",
    "tab\there",
    "new\nline",
    "  spaces  ",
    "\u00a0nbsp",
    "ﬁ ligature",
    "Ｆｕｌｌｗｉｄｔｈ",
    "mojibake: Ã©",
    "zero\u200bwidth",
    "combining é",
    "Ⅻ",
    "½",
    "²",
    "ǅ",
    "İstanbul",
    "ß",
    "ﬀ",
    "ᴀʙᴄ",
    "\u2028sep",
]


def varied_strings(captions: list[str], n: int = 1200) -> list[str]:
    rng = random.Random(1234)
    out = list(captions[:300]) + PIECES
    while len(out) < n:
        k = rng.randint(1, 12)
        parts = [
            rng.choice(PIECES) if rng.random() < 0.4 else rng.choice(captions) for _ in range(k)
        ]
        sep = rng.choice([" ", "", "  ", " - ", ", ", "\n"])
        s = sep.join(parts)
        if rng.random() < 0.2:
            s = s.upper()
        if rng.random() < 0.1:
            s = "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 60)))
        out.append(s)
    return out


def test_token_ids_match_reference(coco_captions):
    ref = reference_tokenizer()
    ours = get_tokenizer()
    strings = varied_strings(coco_captions)
    assert len(strings) >= 1000
    mismatches = [s for s in strings if ours.encode(s) != ref.encode(s)]
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:3]!r}"
    # Decoding matches too (word boundaries become spaces).
    for s in strings[:200]:
        ids = ours.encode(s)
        assert ours.decode(ids) == ref.decode(ids)


def test_vocabulary_matches_reference():
    ref = reference_tokenizer()
    ours = get_tokenizer()
    assert ours.encoder == ref.encoder
    assert (ours.sot_token, ours.eot_token) == (49406, 49407)


def test_tokenize_layout_and_errors():
    tokens = clip.tokenize(["a diagram", "a dog"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int
    ids = get_tokenizer().encode("a diagram")
    assert tokens[0, : len(ids) + 2].tolist() == [49406, *ids, 49407]
    assert (tokens[0, len(ids) + 2 :] == 0).all()
    assert clip.tokenize("single").shape == (1, 77)

    long_text = "word " * 100
    with pytest.raises(RuntimeError, match="too long for context length 77"):
        clip.tokenize(long_text)
    cut = clip.tokenize(long_text, truncate=True)
    assert cut[0, -1].item() == 49407 and cut[0, 0].item() == 49406

    tokens, mask = clip.tokenize(["a b c", "a"], return_attention_mask=True)
    assert mask.sum(dim=1).tolist() == [5, 3]
    assert ((tokens != 0).long() == mask).all()


def test_encode_text_long_windows(tiny_checkpoint):
    model, _ = clip.load(tiny_checkpoint, device="cpu")
    short = clip.encode_text_long(model, ["a photo of a dog"])
    direct = torch.nn.functional.normalize(
        model.encode_text(clip.tokenize(["a photo of a dog"])).float(), dim=-1
    )
    torch.testing.assert_close(short, direct.detach(), atol=1e-5, rtol=0)
    text = " ".join(f"word{i}" for i in range(200))  # far beyond 77 tokens
    emb = clip.encode_text_long(model, [text])
    assert emb.shape == (1, model.embed_dim)
    assert abs(emb.norm().item() - 1) < 1e-5
    # Different from the truncated encoding: the later windows contribute.
    trunc = torch.nn.functional.normalize(
        model.encode_text(clip.tokenize([text], truncate=True)).float(), dim=-1
    )
    assert (emb - trunc).abs().max() > 1e-4


def test_plain_ascii_skips_ftfy_and_changes_nothing():
    """clean() leaves ftfy out for printable ASCII without "&" (the torch-free query path
    saves its import): ftfy would return such text unchanged."""
    import html

    import ftfy

    from clipmodel.tokenizer import _PLAIN, clean

    rng = random.Random(15)
    alphabet = "".join(chr(c) for c in range(32, 127) if chr(c) != "&")
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert _PLAIN.fullmatch(text) and ftfy.fix_text(text) == text
    for text in ("caf\u00c3\u00a9 &amp; cr\u00c3\u00a8me", "a\tb\r\nc", "x &lt; y", "\u201cq\u201d"):
        assert not _PLAIN.fullmatch(text)  # these go through ftfy, as before
        repaired = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        assert clean(text) == " ".join(repaired.split()).lower()
