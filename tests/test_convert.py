"""Hugging Face and open_clip checkpoints load through ``clipmodel.load`` and match their sources.

Acceptance: a random ``transformers.CLIPModel`` saved with ``save_pretrained`` loads and matches
transformers' own outputs (max |diff| / max |ref| <= 1e-4).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import clipmodel
from clipmodel import CheckpointFormatError
from clipmodel.download import sha256_file

transformers = pytest.importorskip("transformers")

RTOL = 1e-4
TEXTS = ["a photo of a cat", "a diagram", "two dogs playing in the snow at night", ""]
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute difference relative to the reference's largest magnitude."""
    return ((ours.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def _features(out) -> torch.Tensor:
    """``get_*_features`` return a tensor (transformers 4) or an output object (transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def hf_config(text: dict | None = None, vision: dict | None = None, **kw):
    text_cfg = {
        **SMALL,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        **(text or {}),
    }
    vision_cfg = {
        **SMALL,
        "image_size": 64,
        "patch_size": 16,
        "hidden_act": "quick_gelu",
        **(vision or {}),
    }
    return transformers.CLIPConfig(
        text_config=text_cfg, vision_config=vision_cfg, **{"projection_dim": 32, **kw}
    )


@torch.no_grad()
def random_hf_model(config, seed: int = 0):
    """A transformers CLIPModel with every constant-initialised tensor (norms, biases) randomised."""
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    for name, p in model.named_parameters():
        if name != "logit_scale" and bool((p == p.flatten()[0]).all()):
            p.add_(0.2 * torch.randn_like(p))
    return model


def save_bin(model, path: Path, shards: int = 1) -> Path:
    """Save as ``pytorch_model.bin`` (transformers 5 always writes safetensors), optionally sharded."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    sd = model.state_dict()
    if shards == 1:
        torch.save(sd, path / "pytorch_model.bin")
        return path
    keys, weight_map = list(sd), {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: sd[k] for k in part}, path / name)
        weight_map.update(dict.fromkeys(part, name))
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model(hf_config())


@pytest.fixture(scope="module")
def hf_dirs(hf_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(root / "safetensors")
    hf_model.save_pretrained(root / "sharded", max_shard_size="2MB")
    save_bin(hf_model, root / "bin")
    save_bin(hf_model, root / "bin-sharded", shards=3)
    return {p.name: p for p in root.iterdir()}


@torch.no_grad()
def compare_with_transformers(hf, model, resolution: int) -> dict[str, float]:
    tokens = clipmodel.tokenize(TEXTS)
    mask = (tokens != 0).long()
    images = torch.randn(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    ref_img = _features(hf.get_image_features(pixel_values=images))
    ref_txt = _features(hf.get_text_features(input_ids=tokens, attention_mask=mask))
    ref_logits = hf(input_ids=tokens, pixel_values=images, attention_mask=mask).logits_per_image
    return {
        "image": rel_err(model.encode_image(images), ref_img),
        "text": rel_err(model.encode_text(tokens), ref_txt),
        "text_masked": rel_err(model.encode_text(tokens, attention_mask=mask), ref_txt),
        "logits_per_image": rel_err(model(images, tokens)[0], ref_logits),
    }


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin", "bin-sharded"])
def test_huggingface_matches_transformers(hf_model, hf_dirs, layout):
    path = hf_dirs[layout]
    model, preprocess = clipmodel.load(path, device="cpu")
    assert model.checkpoint_format == "huggingface"
    assert (model.config.vision_heads, model.config.transformer_heads) == (2, 2)
    assert model.image_resolution == 64 and preprocess is not None
    first = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))[0]
    assert model.checkpoint_sha256 == sha256_file(first)
    errors = compare_with_transformers(hf_model, model, 64)
    print(layout, {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= RTOL, errors


@pytest.mark.slow
def test_huggingface_vit_b32_sized(tmp_path):
    """Default CLIPConfig is ViT-B/32 (openai/clip-vit-base-patch32's architecture)."""
    hf = random_hf_model(transformers.CLIPConfig())
    hf.save_pretrained(tmp_path)
    start = time.perf_counter()
    model, _ = clipmodel.load(tmp_path, device="cpu")
    print(f"load {time.perf_counter() - start:.1f}s")
    assert (model.config.vision_heads, model.config.transformer_heads) == (12, 8)
    errors = compare_with_transformers(hf, model, 224)
    print("ViT-B/32", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= RTOL, errors


@pytest.mark.parametrize("wrap", ["open_clip_training", "bare_with_attn_mask"])
@torch.no_grad()
def test_open_clip_checkpoint_matches_reference(tmp_path, wrap):
    from .checkpoints import reference_model

    ref = reference_model("tiny-vit")
    sd = ref.state_dict()
    if wrap == "open_clip_training":
        obj = {"epoch": 3, "name": "x", "state_dict": {"module." + k: v for k, v in sd.items()}}
    else:
        obj = {**sd, "attn_mask": torch.full((77, 77), float("-inf")).triu(1)}
    torch.save(obj, tmp_path / "ckpt.pt")
    model, _ = clipmodel.load(tmp_path / "ckpt.pt", device="cpu")
    tokens = clipmodel.tokenize(TEXTS)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert rel_err(model.encode_image(images), ref.encode_image(images)) <= RTOL
    assert rel_err(model.encode_text(tokens), ref.encode_text(tokens)) <= RTOL


def _with_config(src: Path, dst: Path, edit) -> Path:
    """Copy a saved HF directory, editing its config.json with ``edit(config)``."""
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    config = json.loads((src / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["vision_config"].update(hidden_act="gelu"), "different hidden_act"),
        (lambda c: c["text_config"].update(hidden_act="gelu_new"), "hidden_act"),
        (lambda c: c["text_config"].update(layer_norm_eps=1e-6), "layer_norm_eps"),
        (lambda c: c["vision_config"].update(intermediate_size=128), "intermediate_size"),
        (lambda c: c.update(model_type="blip"), "model_type"),
        # SigLIP folders load now (issue 19): CLIP weights labelled siglip are refused by name
        (lambda c: c.update(model_type="siglip"), "not a siglip checkpoint: missing"),
    ],
)
def test_unsupported_hf_settings_are_refused(hf_dirs, tmp_path, edit, needle):
    path = _with_config(hf_dirs["safetensors"], tmp_path / "edited", edit)
    with pytest.raises(CheckpointFormatError, match=needle):
        clipmodel.load(path, device="cpu")


def test_hf_directory_without_weights(hf_dirs, tmp_path):
    (tmp_path / "config.json").write_text((hf_dirs["safetensors"] / "config.json").read_text())
    with pytest.raises(CheckpointFormatError, match=r"no weights file.*model\.safetensors"):
        clipmodel.load(tmp_path, device="cpu")
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointFormatError, match="without config.json"):
        clipmodel.load(tmp_path, device="cpu")


def test_hf_unmapped_keys_are_named(hf_model, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    sd["vision_model.encoder.layers.0.layer_scale"] = torch.ones(64)
    sd["vision_model.head.weight"] = torch.ones(2)
    del sd["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    hf_model.config.save_pretrained(tmp_path)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointFormatError, match="layers.0.layer_scale.*vision_model.head.weight"
    ):
        clipmodel.load(tmp_path, device="cpu")
    del sd["vision_model.encoder.layers.0.layer_scale"], sd["vision_model.head.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match=r"layers\.1\.self_attn\.k_proj\.bias"):
        clipmodel.load(tmp_path, device="cpu")


def test_plain_state_dict_with_wrong_keys(tmp_path):
    from .checkpoints import reference_model

    sd = reference_model("tiny-vit").state_dict()
    del sd["visual.ln_post.bias"]
    sd["visual.extra_head.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointFormatError) as info:
        clipmodel.load(tmp_path / "bad.pt", device="cpu")
    assert "visual.ln_post.bias" in str(info.value)
    assert "visual.extra_head.weight" in str(info.value)


def test_huggingface_gelu_model_matches_transformers(tmp_path):
    """Non-OpenAI CLIPs trained with exact GELU run with that activation (not QuickGELU)."""
    config = hf_config(text={"hidden_act": "gelu"}, vision={"hidden_act": "gelu"})
    hf = random_hf_model(config, seed=4)
    hf.save_pretrained(tmp_path)
    model, _ = clipmodel.load(tmp_path, device="cpu")
    assert model.config.activation == "gelu"
    errors = compare_with_transformers(hf, model, 64)
    assert max(errors.values()) <= RTOL, errors


@torch.no_grad()
def test_open_clip_hub_directory_and_safetensors(tmp_path):
    """An open_clip hub folder (open_clip_config.json + weights) and a plain .safetensors file."""
    from safetensors.torch import save_file

    from .checkpoints import reference_model

    ref = reference_model("tiny-vit", seed=9)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(sd, hub / "open_clip_model.safetensors")
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model, _ = clipmodel.load(hub, device="cpu")
    assert model.config.activation == "quick_gelu" and model.checkpoint_format == "open_clip"
    assert rel_err(model.encode_image(images), ref.encode_image(images)) <= RTOL

    # Without quick_gelu in its config, open_clip builds nn.GELU: so must we.
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 64}}))
    gelu_model, _ = clipmodel.load(hub, device="cpu")
    assert gelu_model.config.activation == "gelu"

    save_file(sd, tmp_path / "plain.safetensors")
    plain, _ = clipmodel.load(tmp_path / "plain.safetensors", device="cpu")
    assert plain.checkpoint_format == "safetensors"
    assert rel_err(plain.encode_image(images), ref.encode_image(images)) <= RTOL
    # The user can state the activation of a plain file whose origin they know.
    forced, _ = clipmodel.load(tmp_path / "plain.safetensors", device="cpu", activation="gelu")
    assert forced.config.activation == "gelu"
    assert rel_err(forced.encode_image(images), ref.encode_image(images)) > 1e-3
