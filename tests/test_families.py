"""Issue 19: SigLIP, SigLIP2, open_clip LAION (exact GELU) and XLM-R multilingual models load
through ``clipmodel.load`` from their references' own formats and match them; their tokenizers
give the reference tokenizer classes' ids; the registry verifies and pins files."""

from __future__ import annotations

import json

import pytest
import torch

import clipmodel
from clipmodel.build import CheckpointFormatError
from clipmodel.families.text import from_sentencepiece, from_tokenizer_json

from .family_checkpoints import write_siglip, write_xlmr
from .family_tokenizers import (
    WORDS,
    sentences,
    train_gemma_tokenizer,
    train_spiece,
    train_xlmr_tokenizer,
)

transformers = pytest.importorskip("transformers")
TEXTS = ["a dog", "der Hund läuft am sonnigen Strand!", "小狗 在 海滩 上 奔跑", "", "ЁЛКА, 7 & 😀",
         "الكلب يركض على الشاطئ " * 6]  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """Siglip2ImageProcessor's layout: (B, rows * cols, P * P * 3), (row, column, colour)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
@torch.no_grad()
def test_siglip_matches_transformers(tmp_path, family):
    ref = write_siglip(tmp_path / family, family)
    model, pre = clipmodel.load(tmp_path / family, device="cpu")
    assert model.family == family and pre.spec.crop is False and pre.spec.mean == (0.5, 0.5, 0.5)
    x = torch.randn(4, 3, 32, 32)
    if family == "siglip":
        want = ref.get_image_features(pixel_values=x)
    else:
        want = ref.get_image_features(pixel_values=_patches(x, 8), spatial_shapes=torch.tensor([[4, 4]] * 4),
                                      pixel_attention_mask=torch.ones(4, 16, dtype=torch.long))  # fmt: skip
    want = getattr(want, "pooler_output", want)
    assert _rel(model.encode_image(x), want) < 1e-4
    ids = model.tokenizer(TEXTS)
    assert ids.shape == (len(TEXTS), 16)
    got_txt = model.encode_text(ids)
    want_txt = ref.get_text_features(input_ids=ids)
    assert _rel(got_txt, getattr(want_txt, "pooler_output", want_txt)) < 1e-4
    # sigmoid logits with the model's own scale and bias
    logits, _ = model(x, ids)
    ref_out = ref(input_ids=ids, pixel_values=x) if family == "siglip" else None
    if ref_out is not None:
        assert torch.allclose(logits, ref_out.logits_per_image, atol=1e-4)
    assert float(model.logit_bias) == pytest.approx(-4.0)


@torch.no_grad()
def test_xlmr_matches_open_clip_tower(tmp_path):
    ref = write_xlmr(tmp_path / "xlmr")
    model, pre = clipmodel.load(tmp_path / "xlmr", device="cpu")
    assert model.family == "xlm-roberta" and pre.spec.crop
    x = torch.randn(3, 3, 32, 32)
    assert _rel(model.encode_image(x), ref.encode_image(x)) < 1e-4
    ids = model.tokenizer(TEXTS)
    assert ids.shape == (len(TEXTS), 77) and int(ids[0, 0]) == 0
    assert _rel(model.encode_text(ids), ref.encode_text(ids)) < 1e-4


@torch.no_grad()
def test_laion_open_clip_folder_runs_exact_gelu(tmp_path):
    """open_clip's LAION/DataComp layout: OpenAI keys, open_clip_config.json without
    quick_gelu -> exact GELU; matches transformers' CLIPModel with hidden_act gelu."""
    from safetensors.torch import save_file

    from clipmodel.convert import convert_state_dict

    torch.manual_seed(0)
    t = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
             hidden_act="gelu", vocab_size=49408)  # fmt: skip
    v = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
             image_size=32, patch_size=8, hidden_act="gelu")  # fmt: skip
    ref = transformers.CLIPModel(transformers.CLIPConfig(text_config=t, vision_config=v, projection_dim=32)).eval()
    for p in ref.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    hub = tmp_path / "laion"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in convert_state_dict(ref.state_dict()).items()},
              hub / "open_clip_model.safetensors")  # fmt: skip
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 32}}))
    model, _ = clipmodel.load(hub, device="cpu")
    assert model.config.activation == "gelu" and model.config.vision_heads is None
    x = torch.randn(2, 3, 32, 32)
    want = ref.get_image_features(pixel_values=x)
    assert _rel(model.encode_image(x), getattr(want, "pooler_output", want)) < 1e-4
    ids = clipmodel.tokenize(["a photo of a dog", "two cats"])
    want = ref.get_text_features(input_ids=ids.long())
    assert _rel(model.encode_text(ids), getattr(want, "pooler_output", want)) < 1e-4


def test_tokenizers_match_reference_classes(tmp_path):
    """>= 1,000 strings in 13 scripts/languages: our wrappers == transformers' classes,
    loaded from the same files (trained here: the real vocabularies are not available)."""
    texts = sentences(1200, seed=7) + TEXTS
    assert len(WORDS) >= 10
    cases = [
        (from_sentencepiece(train_spiece(tmp_path / "sp"), 64),
         transformers.SiglipTokenizer(str(tmp_path / "sp" / "spiece.model")), 64),
        (from_tokenizer_json(train_xlmr_tokenizer(tmp_path / "xl"), 77),
         transformers.XLMRobertaTokenizer.from_pretrained(str(tmp_path / "xl")), 77),
        (from_tokenizer_json(train_gemma_tokenizer(tmp_path / "gm"), 64, lowercase=True),
         transformers.Siglip2Tokenizer.from_pretrained(str(tmp_path / "gm")), 64),
    ]  # fmt: skip
    for ours, ref, n in cases:
        want = ref(texts, padding="max_length", max_length=n, truncation=True)["input_ids"]
        got = ours(texts).tolist()
        bad = [t for t, a, b in zip(texts, got, want) if a != b]
        assert not bad, (ours, bad[:3])
        assert len({tuple(r) for r in got}) > 1000  # the strings really differ


def test_loud_validation(tmp_path):
    write_siglip(tmp_path / "s", "siglip")
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg["vision_config"]["hidden_size"] = 96
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointFormatError, match="hidden_size is 96 but the weights"):
        clipmodel.load(tmp_path / "s", device="cpu")
    cfg["vision_config"]["hidden_size"] = 64
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "s" / "spiece.model").unlink()
    with pytest.raises(CheckpointFormatError, match="spiece.model"):
        clipmodel.load(tmp_path / "s", device="cpu")
    write_xlmr(tmp_path / "x")
    (tmp_path / "x" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointFormatError, match="tokenizer.json"):
        clipmodel.load(tmp_path / "x", device="cpu")


@pytest.mark.parametrize("family", ["siglip2", "xlm-roberta"])
def test_torch_fast_path_is_self_checked_with_the_models_own_inputs(tmp_path, family):
    """The bf16 path's check embeds the calibration set through the family's own tokenizer
    and preprocessing, against the fp32 model; the measurement is cached and reused."""
    from clipmodel.fastpath import check, select

    write_siglip(tmp_path / "m", family) if family != "xlm-roberta" else write_xlmr(tmp_path / "m")
    exact, _ = clipmodel.load(tmp_path / "m", device="cpu", backend="torch")
    runner, report = select(exact, ["torch bf16", "torch fp32"], tmp_path / "cache")
    (c,) = report.checks
    assert c.path == "torch bf16" and c.images.n >= 8 and c.texts.n >= 8 and not c.cached
    assert c.images.mean > 0.99 and c.texts.mean > 0.99  # bf16 of a small random model
    assert runner.fast_path in ("torch bf16", "torch fp32") and runner.tokenizer is exact.tokenizer
    assert check(exact, "torch bf16", runner, tmp_path / "cache").cached


def test_registry_pins_on_first_use_and_refuses_changes(tmp_path, monkeypatch):
    from clipmodel import registry

    name = "ViT-B-16-SigLIP2/webli"
    assert {"ViT-B-32/datacomp_xl_s13b_b90k", name,
            "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"} <= set(registry.names())  # fmt: skip
    for model in registry.REGISTRY.values():
        for f in model.files:  # the hub, or OpenAI's own files with their published hashes
            assert f.url.startswith("https://huggingface.co/") or f.sha256 in clipmodel.download.known_sha256s()
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    with pytest.raises(clipmodel.CheckpointUnavailableError, match="CLIPSEARCH_OFFLINE"):
        clipmodel.load(name, download_root=tmp_path)
    folder = tmp_path / "models" / registry.REGISTRY[name].folder_name
    write_siglip(folder, "siglip2")  # placed by hand, as offline users do
    model, pre = clipmodel.load(name, download_root=tmp_path, device="cpu")
    assert model.model_name == name and model.family == "siglip2"
    pins = json.loads((folder / "pins.json").read_text())
    assert set(pins) == {f.filename for f in registry.REGISTRY[name].files}
    (folder / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(clipmodel.CheckpointUnavailableError, match="has sha256"):
        clipmodel.load(name, download_root=tmp_path, device="cpu")


@torch.no_grad()
def test_mclip_matches_its_reference(tmp_path):
    """M-CLIP: the XLM-R text tower + LinearTransformation beside an OpenAI image checkpoint."""
    from .family_checkpoints import write_mclip

    encode_text, image_ref = write_mclip(tmp_path / "mclip")
    model, pre = clipmodel.load(tmp_path / "mclip", device="cpu")
    assert model.checkpoint_format == "m-clip" and model.context_length == 512
    assert model.config.activation == "quick_gelu" and pre.is_openai
    x = torch.randn(2, 3, 64, 64)
    assert _rel(model.encode_image(x), image_ref.encode_image(x)) < 1e-4
    ids = model.tokenizer(TEXTS)
    assert _rel(model.encode_text(ids), encode_text(ids)) < 1e-4
    (tmp_path / "mclip" / "ViT-B-32.pt").unlink()
    with pytest.raises(CheckpointFormatError, match="exactly one OpenAI image checkpoint"):
        clipmodel.load(tmp_path / "mclip", device="cpu")


@pytest.mark.parametrize("resample", [3, 2])
def test_siglip_preprocessing_matches_transformers(tmp_path, coco_images, resample):
    """Squash to size x size (no crop), mean/std 0.5, the configured filter: transformers'
    SiglipImageProcessorPil gives the same pixels on real photos."""
    from PIL import Image
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from clipmodel.families.siglip_load import image_spec
    from clipmodel.preprocess import Preprocess

    from .family_checkpoints import siglip_config

    cfg = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": resample,
           "size": {"height": 32, "width": 32}}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    from clipmodel.families.siglip_load import infer_config

    ref = write_siglip(tmp_path / "m", "siglip")
    conf = infer_config({k: v for k, v in ref.state_dict().items()}, siglip_config().to_dict(), "x")
    pre = Preprocess(32, spec=image_spec(tmp_path, conf))
    hf = SiglipImageProcessorPil(size={"height": 32, "width": 32}, resample=resample)
    for path in coco_images[:4]:
        with Image.open(path) as img:
            want = hf(img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
            assert float((pre(img) - want).abs().max()) < 1e-5
