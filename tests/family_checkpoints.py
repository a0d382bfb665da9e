"""Random-weight checkpoints of the non-OpenAI families in their reference's own formats:
Hugging Face ``save_pretrained`` folders of ``SiglipModel`` / ``Siglip2Model`` (safetensors +
config.json + tokenizer), and open_clip's ``xlm-roberta-base-ViT-B-32`` layout (an open_clip
state dict: ``visual.*`` OpenAI ViT, ``text.transformer.*`` XLM-R, ``text.proj``) built from
transformers' ``CLIPVisionModelWithProjection`` and ``XLMRobertaModel``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .family_tokenizers import train_gemma_tokenizer, train_spiece, train_xlmr_tokenizer


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float parameter perturbed (constant-initialised ones too: norms, biases, probe)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("logit_scale") or name.endswith("logit_bias"):
            continue
        p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.float().eval()


def siglip_config(family: str = "siglip", vocab: int = 400, **vision):
    """A small SiglipConfig / Siglip2Config (2 layers per tower, width 64, 2 heads)."""
    import transformers

    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, projection_size=64)  # fmt: skip
    v = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=2,
             patch_size=8)  # fmt: skip
    if family == "siglip":
        v["image_size"] = 32
        cls = transformers.SiglipConfig
    else:
        v["num_patches"] = 16
        cls = transformers.Siglip2Config
    v.update(vision)
    return cls(text_config=text, vision_config=v)


def siglip_reference(family: str = "siglip", seed: int = 0, full: bool = False, **vision):
    """A random SigLIP / SigLIP2: small, or ``full``: transformers' default configuration
    (ViT-B/16, 224 px for SigLIP, 256 patches for SigLIP2, their real vocabulary sizes)."""
    import transformers

    torch.manual_seed(seed)
    cls = transformers.SiglipModel if family == "siglip" else transformers.Siglip2Model
    vocab = 400 if family == "siglip" else 600  # the sizes the tokenizers are trained to
    if full:
        conf = (transformers.SiglipConfig() if family == "siglip"
                else transformers.Siglip2Config(text_config={"vocab_size": 256000}))  # Gemma's
    else:
        conf = siglip_config(family, vocab, **vision)
    model = cls(conf)
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    return randomise(model, seed)


def write_siglip(folder: Path, family: str = "siglip", seed: int = 0, full: bool = False):
    """A ``save_pretrained`` folder with its tokenizer file; returns the reference model."""
    model = siglip_reference(family, seed, full)
    model.save_pretrained(folder)
    if family == "siglip":
        train_spiece(folder)
    else:
        train_gemma_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3}))  # fmt: skip
    return model


class XlmrReference(torch.nn.Module):
    """open_clip's xlm-roberta CLIP rebuilt from transformers parts: CLIP's vision tower with
    projection, XLMRobertaModel (no pooler), mean pooling over the real tokens, MLP proj."""

    def __init__(self, width: int = 64, embed: int = 48, seed: int = 0, full: bool = False):
        """Small, or ``full``: xlm-roberta-base (768 x 12 layers, 250,002 tokens, 514
        positions) beside a ViT-B/32 at 224 px, embeddings of 512."""
        import transformers

        super().__init__()
        torch.manual_seed(seed)
        if full:
            width, embed = 768, 512
            vcfg = transformers.CLIPVisionConfig(projection_dim=512, hidden_act="gelu",
                                                 patch_size=32)  # fmt: skip
            layers, heads, vocab, positions = 12, 12, 250002, 514
        else:
            vcfg = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=256,
                                                 num_hidden_layers=2, num_attention_heads=1,
                                                 image_size=32, patch_size=8, projection_dim=embed,
                                                 hidden_act="gelu")  # fmt: skip
            layers, heads, vocab, positions = 2, 1, 501, 80
        self.vision = transformers.CLIPVisionModelWithProjection(vcfg)
        tcfg = transformers.XLMRobertaConfig(vocab_size=vocab, hidden_size=width,
                                             num_hidden_layers=layers, num_attention_heads=heads,
                                             intermediate_size=4 * width if full else 3 * width,
                                             max_position_embeddings=positions, pad_token_id=1,
                                             type_vocab_size=1, layer_norm_eps=1e-5)  # fmt: skip
        self.text = transformers.XLMRobertaModel(tcfg, add_pooling_layer=False)
        hidden = (width + embed) // 2
        self.proj = torch.nn.Sequential(torch.nn.Linear(width, hidden, bias=False), torch.nn.GELU(),
                                        torch.nn.Linear(hidden, embed, bias=False))  # fmt: skip
        randomise(self, seed)

    def encode_image(self, pixels):
        return self.vision(pixel_values=pixels).image_embeds

    def encode_text(self, ids):
        mask = (ids != 1).long()
        h = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.proj((h * mask.unsqueeze(-1)).sum(1) / mask.sum(-1, keepdim=True))

    def open_clip_state_dict(self) -> dict[str, torch.Tensor]:
        from clipmodel.convert import convert_state_dict

        hf = {"vision_model." + k.removeprefix("vision_model."): v
              for k, v in self.vision.state_dict().items() if k.startswith("vision_model.")}  # fmt: skip
        hf["visual_projection.weight"] = self.vision.visual_projection.weight
        sd = {k: v for k, v in convert_state_dict(hf).items()}
        sd.update({f"text.transformer.{k}": v for k, v in self.text.state_dict().items()})
        sd.update({f"text.proj.{k}": v for k, v in self.proj.state_dict().items()})
        sd["logit_scale"] = torch.tensor(2.6592)
        return {k: v.clone().contiguous() for k, v in sd.items()}


def write_xlmr(folder: Path, seed: int = 0, full: bool = False) -> XlmrReference:
    """An open_clip hub-style folder: open_clip_config.json, open_clip_pytorch_model.bin and
    XLM-R's tokenizer.json (trained here). Returns the reference. ``full``: open_clip's
    xlm-roberta-base-ViT-B-32 sizes, its config without a head count (width / 64 = 12)."""
    ref = XlmrReference(seed=seed, full=full).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": ref.open_clip_state_dict()}, folder / "open_clip_pytorch_model.bin")
    text_cfg = {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base",
                "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler"}
    if not full:
        text_cfg["heads"] = 1
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 512 if full else 48, "text_cfg": text_cfg},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]}}))  # fmt: skip
    train_xlmr_tokenizer(folder)
    return ref


def write_mclip(folder: Path, seed: int = 0):
    """An M-CLIP folder: config.json (model_type "M-CLIP"), pytorch_model.bin (an
    ``XLMRobertaModel`` with its pooler, as ``AutoModel`` builds it, and
    ``LinearTransformation``), XLM-R's tokenizer.json, and the OpenAI image checkpoint it pairs
    with (the tiny reference ViT, under OpenAI's file name). Returns (text reference, image
    reference)."""
    import transformers

    from .checkpoints import reference_model, write_random_checkpoint

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = transformers.XLMRobertaConfig(vocab_size=501, hidden_size=128, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=256,
                                        max_position_embeddings=514, pad_token_id=1,
                                        type_vocab_size=1, layer_norm_eps=1e-5)  # fmt: skip
    text = transformers.XLMRobertaModel(cfg)
    linear = torch.nn.Linear(128, 64)
    randomise(text, seed)
    randomise(linear, seed + 1)
    sd = {f"transformer.{k}": v for k, v in text.state_dict().items()}
    sd.update({f"LinearTransformation.{k}": v for k, v in linear.state_dict().items()})
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["MultilingualCLIP"], "model_type": "M-CLIP",
        "modelBase": "xlm-roberta-large", "numDims": 64, "transformerDimensions": 128}))  # fmt: skip
    train_xlmr_tokenizer(folder)
    write_random_checkpoint(folder / "ViT-B-32.pt", "tiny-vit", seed)

    def encode_text(ids: torch.Tensor) -> torch.Tensor:  # MultilingualCLIP.forward
        att = (ids != 1).long()
        embs = text(input_ids=ids, attention_mask=att)[0]
        return linear((embs * att.unsqueeze(2)).sum(dim=1) / att.sum(dim=1)[:, None])

    return encode_text, reference_model("tiny-vit", seed)
