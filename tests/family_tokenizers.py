"""Small tokenizer files in each family's real format, trained here on generated multilingual
text (the real vocabularies cannot be downloaded offline): a sentencepiece unigram model like
SigLIP's ``spiece.model``, a ``tokenizers`` unigram with XLM-R's specials and post-processor,
and a byte-fallback BPE ``tokenizer.json`` laid out as Gemma's (SigLIP2)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

# Words in 12 scripts and languages; sentences are drawn from them with punctuation, digits,
# case and spacing varied, so that every normalisation step of each tokenizer is exercised.
WORDS = {
    "en": "the dog runs on a sunny beach with children and their kite near old boats".split(),
    "de": "der Hund läuft am sonnigen Strand mit Kindern Straße Größe übermäßig Brücke".split(),
    "fr": "le chien court sur une plage ensoleillée avec des enfants été garçon œuvre".split(),
    "es": "el perro corre en una playa soleada con niños año mañana corazón pingüino".split(),
    "ru": "собака бежит по солнечному пляжу с детьми и воздушным змеем ёлка".split(),
    "el": "ο σκύλος τρέχει σε μια ηλιόλουστη παραλία με παιδιά Ωραία".split(),
    "zh": ["小狗", "在", "阳光", "明媚", "的", "海滩", "上", "奔跑", "孩子们", "风筝", "照片", "猫"],
    "ja": ["犬", "が", "晴れた", "浜辺", "を", "走る", "子供", "たち", "と", "凧", "写真", "カメラ"],
    "ko": "개가 화창한 해변에서 아이들과 함께 달린다 사진 고양이".split(),
    "ar": "الكلب يركض على الشاطئ المشمس مع الأطفال صورة قطة".split(),
    "hi": "कुत्ता धूप वाले समुद्र तट पर बच्चों के साथ दौड़ता है तस्वीर".split(),
    "th": ["สุนัข", "วิ่ง", "บน", "ชายหาด", "ที่", "มีแดด", "กับ", "เด็กๆ", "รูปภาพ"],
    "he": "הכלב רץ על החוף השמשי עם הילדים תמונה".split(),
}
_EXTRA = [",", ".", "!", "?", "'s", "-", "(", ")", "\"", "2024", "7", "3.5", "&", "#1", "…", "😀"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` generated sentences, each mostly in one language, some mixed; varied case,
    punctuation, digits, emoji and whitespace."""
    rng = random.Random(seed)
    langs = sorted(WORDS)
    out = []
    for i in range(n):
        lang = langs[i % len(langs)]
        words = [rng.choice(WORDS[lang]) for _ in range(rng.randint(1, 14))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[rng.choice(langs)]))
        if rng.random() < 0.4:
            words.insert(rng.randrange(len(words) + 1), rng.choice(_EXTRA))
        if rng.random() < 0.3:
            words = [w.upper() if rng.random() < 0.3 else w.capitalize() for w in words]
        sep = rng.choice([" ", " ", " ", "  ", "\t", " \n"])
        text = sep.join(words)
        if rng.random() < 0.2:
            text = "  " + text + " "
        out.append(text)
    return out


def corpus() -> list[str]:
    return sentences(3000, seed=1)


def train_spiece(folder: Path, vocab_size: int = 400) -> Path:
    """A unigram ``spiece.model`` with T5/SigLIP's ids: <pad> 0, </s> 1, <unk> 2."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2, hard_vocab_limit=False,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    return folder / "spiece.model"


def train_xlmr_tokenizer(folder: Path, vocab_size: int = 500) -> Path:
    """An XLM-R style ``tokenizer.json``: unigram, <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last,
    whitespace split + Metaspace and ``<s> text </s>``: the pipeline transformers 5's
    ``XLMRobertaTokenizer`` builds (without the real file's precompiled normaliser, which a
    trained vocabulary does not have)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>",
                             special_tokens=["<s>", "<pad>", "</s>", "<unk>"])  # fmt: skip
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>", "cls_token": "<s>",
        "sep_token": "</s>", "model_max_length": 512}))  # fmt: skip
    return folder / "tokenizer.json"


def train_gemma_tokenizer(folder: Path, vocab_size: int = 600) -> Path:
    """A Gemma-layout ``tokenizer.json`` (SigLIP2's): BPE on "▁"-joined text (byte fallback
    on, without byte pieces in this small vocabulary: unseen characters become <unk>),
    <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4, ``<eos>`` appended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])  # fmt: skip
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok.train_from_iterator(corpus(), BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Siglip2Tokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
        "padding_side": "right", "add_bos_token": False, "add_eos_token": True,
        "model_max_length": 64}))  # fmt: skip
    return folder / "tokenizer.json"
