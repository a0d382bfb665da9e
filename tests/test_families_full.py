"""Issue 19 at full size (slow): SigLIP ViT-B/16-224, SigLIP2 B/16 (256 patches, Gemma's
256k vocabulary) and open_clip's xlm-roberta-base-ViT-B-32, random weights in their
references' formats, loaded through ``clipmodel.load``: within 1e-4 of transformers."""

from __future__ import annotations

import pytest
import torch

import clipmodel

from .family_checkpoints import write_siglip, write_xlmr
from .test_families import TEXTS, _patches, _rel

pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
@torch.no_grad()
def test_full_size_siglip(tmp_path, family):
    ref = write_siglip(tmp_path / family, family, full=True)
    model, _ = clipmodel.load(tmp_path / family, device="cpu", backend="torch")
    c = model.config
    assert (c.vision_width, c.vision_layers, c.patch_size) == (768, 12, 16)
    r = c.image_resolution
    x = torch.randn(2, 3, r, r)
    if family == "siglip":
        want = ref.get_image_features(pixel_values=x)
    else:
        n = (r // 16) ** 2
        want = ref.get_image_features(pixel_values=_patches(x, 16), pixel_attention_mask=torch.ones(2, n, dtype=torch.long),
                                      spatial_shapes=torch.tensor([[r // 16] * 2] * 2))  # fmt: skip
    assert _rel(model.encode_image(x), getattr(want, "pooler_output", want)) < 1e-4
    ids = model.tokenizer(TEXTS)
    want = ref.get_text_features(input_ids=ids)
    assert _rel(model.encode_text(ids), getattr(want, "pooler_output", want)) < 1e-4


@torch.no_grad()
def test_full_size_xlm_roberta_base_vit_b_32(tmp_path):
    ref = write_xlmr(tmp_path / "xlmr", full=True)
    model, _ = clipmodel.load(tmp_path / "xlmr", device="cpu", backend="torch")
    assert model.text_config.heads == 12 and model.text_config.vocab_size == 250002
    x = torch.randn(2, 3, 224, 224)
    assert _rel(model.encode_image(x), ref.encode_image(x)) < 1e-4
    ids = model.tokenizer(TEXTS)
    assert _rel(model.encode_text(ids), ref.encode_text(ids)) < 1e-4
