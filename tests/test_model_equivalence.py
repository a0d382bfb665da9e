"""Equivalence with OpenAI's reference model.py on identical random weights, per architecture."""

from __future__ import annotations

import pytest
import torch

import clipmodel as clip

from .checkpoints import reference_model

FAST = ["tiny-vit", "tiny-rn", "RN50", "ViT-B/32"]
SLOW = ["RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
TEXTS = [
    "a photo of a dog",
    "kids on a beach at sunset",
    "",
    "A very long caption, with punctuation!!! and numbers 12345 & emoji 🐶🏖️ " * 3,
]


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def check_equivalence(arch: str, tmp_path) -> tuple[float, float, float]:
    ref = reference_model(arch, seed=7)
    path = tmp_path / "model.pt"
    torch.save(ref.state_dict(), path)
    model, preprocess = clip.load(path, device="cpu")
    assert model.config == clip.infer_config(ref.state_dict()), "architecture inferred wrongly"
    if arch in clip.OPENAI_CONFIGS:
        assert model.config == clip.OPENAI_CONFIGS[arch]
    r = model.image_resolution
    assert preprocess.n_px == r
    torch.manual_seed(0)
    images = torch.randn(2, 3, r, r)
    tokens = clip.tokenize(TEXTS, truncate=True)
    with torch.no_grad():
        e_img = rel_err(model.encode_image(images), ref.encode_image(images))
        e_txt = rel_err(model.encode_text(tokens), ref.encode_text(tokens))
        ours_logits, _ = model(images, tokens)
        ref_logits, _ = ref(images, tokens)
        e_log = rel_err(ours_logits, ref_logits)
        # Negative control: the comparison sees a small change in one weight.
        assert type(model).__module__ == "clipmodel.model"
        model.ln_final.weight[0] += 0.5
        assert rel_err(model.encode_text(tokens), ref.encode_text(tokens)) > 1e-4
    print(f"{arch}: image {e_img:.2e} text {e_txt:.2e} logits {e_log:.2e}")
    return e_img, e_txt, e_log


@pytest.mark.parametrize("arch", FAST)
def test_matches_reference(arch, tmp_path):
    errors = check_equivalence(arch, tmp_path)
    assert max(errors) <= 1e-4, errors


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_matches_reference_large(arch, tmp_path):
    errors = check_equivalence(arch, tmp_path)
    assert max(errors) <= 1e-4, errors


def test_inferred_configs_match_official_table():
    """Each official hyper-parameter set round-trips through shape inference (no weights run)."""
    for name, cfg in clip.OPENAI_CONFIGS.items():
        with torch.device("meta"):
            model = clip.CLIP(cfg)
        assert clip.infer_config(model.state_dict()) == cfg, name


def test_fp16_checkpoint_loads_as_fp32(tmp_path):
    ref = reference_model("tiny-rn", seed=3)
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()},
        tmp_path / "half.pt",
    )
    model, _ = clip.load(tmp_path / "half.pt", device="cpu")
    assert model.dtype == torch.float32
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(model.encode_image(img), ref.half().float().encode_image(img)) < 1e-3


def test_bf16_precision_close_to_fp32(tiny_checkpoint):
    m32, _ = clip.load(tiny_checkpoint, device="cpu")
    m16, _ = clip.load(tiny_checkpoint, device="cpu", precision="bf16")
    assert m16.dtype == torch.bfloat16
    img = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        a = torch.nn.functional.normalize(m32.encode_image(img).float(), dim=-1)
        b = torch.nn.functional.normalize(m16.encode_image(img).float(), dim=-1)
    assert (a * b).sum(-1).min() > 0.99


def test_torchscript_archive_requires_known_hash_or_trust(tmp_path):
    ref = reference_model("tiny-vit", seed=5)
    img = torch.randn(1, 3, 64, 64)
    tokens = clip.tokenize(["a cat"])
    traced = torch.jit.trace(ref, (img, tokens), check_trace=False)
    path = tmp_path / "archive.pt"
    torch.jit.save(traced, str(path))
    with pytest.raises(clip.CheckpointFormatError, match="not one of OpenAI's published"):
        clip.load(path, device="cpu")
    model, _ = clip.load(path, device="cpu", trust_archive=True)
    assert model.checkpoint_format == "torchscript"
    with torch.no_grad():
        assert rel_err(model.encode_image(img), ref.encode_image(img)) <= 1e-4


def test_bad_checkpoints_name_the_problem(tmp_path):
    sd = reference_model("tiny-vit").state_dict()
    broken = dict(sd)
    broken.pop("visual.ln_post.bias")
    broken["visual.extra_head.weight"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(clip.CheckpointFormatError) as err:
        clip.load(tmp_path / "broken.pt", device="cpu")
    assert "visual.ln_post.bias" in str(err.value) and "visual.extra_head.weight" in str(err.value)

    torch.save({"weights": [1, 2, 3]}, tmp_path / "junk.pt")
    with pytest.raises(clip.CheckpointFormatError, match="no state dict"):
        clip.load(tmp_path / "junk.pt", device="cpu")

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(clip.CheckpointFormatError, match="garbage.pt"):
        clip.load(tmp_path / "garbage.pt", device="cpu")

    with pytest.raises(RuntimeError, match="not found; available models"):
        clip.load(tmp_path / "missing.pt", device="cpu")


def test_plain_checkpoint_loads_weights_only(tmp_path):
    """A pickle that would run code on load is refused (weights_only=True)."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(clip.CheckpointFormatError, match="evil.pt"):
        clip.load(tmp_path / "evil.pt", device="cpu")


def test_dense_features(tiny_checkpoint):
    model, _ = clip.load(tiny_checkpoint, device="cpu")
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = model.encode_image_dense(img)
        pooled = model.encode_image(img)
    assert torch.allclose(dense.pooled, pooled, atol=1e-5)
    assert dense.grid.shape == (2, 4, 4, model.embed_dim)
    assert dense.attention.shape[0] == 2 and dense.attention.shape[-2:] == (4, 4)
    # Softmax over [CLS, patches]: the patches get a positive share of at most all the mass.
    total = dense.attention.sum(dim=(-1, -2))
    assert ((total > 0) & (total <= 1 + 1e-5)).all()
    assert (dense.attention >= 0).all()


def test_dense_features_resnet(tmp_path):
    ref = reference_model("tiny-rn", seed=1)
    torch.save(ref.state_dict(), tmp_path / "rn.pt")
    model, _ = clip.load(tmp_path / "rn.pt", device="cpu")
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = model.encode_image_dense(img)
        assert rel_err(dense.pooled, ref.encode_image(img)) <= 1e-4
    assert dense.grid.shape == (2, 2, 2, model.embed_dim)
    # The pooled query attends over the mean token and the 4 cells: cells take < all of the mass.
    total = dense.attention.sum(dim=(-1, -2))
    assert ((total > 0) & (total <= 1 + 1e-5)).all()


def test_contrastive_loss_is_symmetric_and_correct():
    logits = torch.tensor([[5.0, 1.0], [0.5, 4.0]])
    loss = clip.clip_loss(logits, logits.t())
    ce = torch.nn.functional.cross_entropy
    labels = torch.arange(2)
    expected = (ce(logits, labels) + ce(logits.t(), labels)) / 2
    assert torch.allclose(loss, expected)
    loss.requires_grad_(False)
    assert clip.clip_loss(torch.eye(3) * 100, torch.eye(3) * 100) < 1e-6
