"""open_clip's multilingual models (``xlm-roberta-base-ViT-B-32``, ``xlm-roberta-large-ViT-H-14``):
OpenAI's ViT image tower (``visual.*``, exact GELU) beside an XLM-RoBERTa text tower
(``text.transformer.*``, mean-pooled, ``text.proj``). The architecture comes from the tensors'
shapes; head counts are width / 64 (every XLM-R size) unless open_clip_config.json's
``text_cfg.heads`` says otherwise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..build import CheckpointFormatError
from ..build import infer_config as infer_clip
from ..model import CLIPConfig, VisionTransformer
from .checks import adopt, count_indices, need
from .xlmr import XlmrConfig, XlmrText

T = "text.transformer."


def is_xlmr_state_dict(sd) -> bool:
    return T + "embeddings.word_embeddings.weight" in sd


class XlmrCLIP(nn.Module):
    """OpenAI's ViT plus an XLM-R text tower, with :class:`~clipmodel.CLIP`'s encoders."""

    family = "xlm-roberta"

    def __init__(self, vision: CLIPConfig, text: XlmrConfig, context_length: int):
        super().__init__()
        self.config = vision
        self.text_config = text
        self.context_length = context_length
        heads = vision.vision_heads or vision.vision_width // 64
        self.visual = VisionTransformer(vision.image_resolution, vision.vision_patch_size,
                                        vision.vision_width, vision.vision_layers, heads,
                                        vision.embed_dim, vision.activation)  # fmt: skip
        self.text = XlmrText(text)
        self.logit_scale = nn.Parameter(torch.zeros([]))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_resolution(self) -> int:
        return self.config.image_resolution

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.dtype))

    def encode_text(
        self, text: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Text embeddings of token ids (B, L); padding (the pad id) is masked, as open_clip
        does, so ``attention_mask`` is not needed."""
        if text.shape[1] > self.context_length:
            raise ValueError(
                f"token sequence of length {text.shape[1]} exceeds context length "
                f"{self.context_length}"
            )
        return self.text(text.long())

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(self.encode_image(image).float(), dim=-1)
        txt = F.normalize(self.encode_text(text).float(), dim=-1)
        logits = self.logit_scale.exp().float() * img @ txt.t()
        return logits, logits.t()


def _vision_config(sd: dict, activation: str) -> CLIPConfig:
    """The ViT's settings, by the OpenAI loader's inference on the ``visual.*`` keys."""
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    if "visual.proj" not in visual:
        raise CheckpointFormatError("an XLM-R CLIP checkpoint needs a ViT image tower (visual.proj)")
    width = visual["visual.proj"].shape[1]
    stand_in = {"token_embedding.weight": torch.empty(1, 1), "positional_embedding": torch.empty(1, 1),
                "ln_final.weight": torch.empty(64), "text_projection": torch.empty(64, width)}  # fmt: skip
    return infer_clip({**visual, **stand_in}, activation=activation)


def infer(sd: dict, text_cfg: dict, activation: str) -> tuple[CLIPConfig, XlmrConfig]:
    need(sd, [T + "embeddings.word_embeddings.weight", T + "embeddings.position_embeddings.weight",
              T + "encoder.layer.0.attention.self.query.weight", "visual.proj"], "XLM-R CLIP")  # fmt: skip
    vision = _vision_config(sd, activation)
    words = sd[T + "embeddings.word_embeddings.weight"]
    width = words.shape[1]
    if "text.proj.0.weight" in sd:
        proj, hidden, embed = "mlp", sd["text.proj.0.weight"].shape[0], sd["text.proj.2.weight"].shape[0]
    elif "text.proj.weight" in sd:
        proj, hidden, embed = "linear", 0, sd["text.proj.weight"].shape[0]
    else:
        proj, hidden, embed = "none", 0, width
    if embed != vision.embed_dim:
        raise CheckpointFormatError(
            f"the text tower gives {embed} dims but the image tower {vision.embed_dim}"
        )
    text = XlmrConfig(
        width=width, layers=count_indices(sd, r"text\.transformer\.encoder\.layer\.(\d+)\."),
        heads=int(text_cfg.get("heads") or width // 64),
        mlp=sd[T + "encoder.layer.0.intermediate.dense.weight"].shape[0],
        vocab_size=words.shape[0], positions=sd[T + "embeddings.position_embeddings.weight"].shape[0],
        pad_id=int(text_cfg.get("pad_id", 1)), eps=float(text_cfg.get("layer_norm_eps", 1e-5)),
        act=str(text_cfg.get("hidden_act", "gelu")), proj=proj, proj_hidden=hidden, embed_dim=embed,
        token_types=sd[T + "embeddings.token_type_embeddings.weight"].shape[0],
        proj_bias="text.proj.bias" in sd,
    )  # fmt: skip
    if text.width % text.heads:
        raise CheckpointFormatError(f"text width {width} is not divisible by {text.heads} heads")
    return vision, text


def build(sd: dict, text_cfg: dict, activation: str = "gelu", context_length: int = 77) -> XlmrCLIP:
    """The model of an open_clip XLM-R state dict (``visual.*``, ``text.*``, ``logit_scale``),
    every key and shape checked. The transformer's unused pooler and buffers are dropped."""
    sd = {k: v for k, v in sd.items()
          if not k.startswith(T + "pooler.") and not k.endswith(("position_ids", "token_type_ids"))
          and k != "attn_mask"}  # fmt: skip
    vision, text = infer(sd, text_cfg, activation)
    positions = text.positions - text.pad_id - 1
    if context_length > positions:
        raise CheckpointFormatError(f"context {context_length} exceeds the {positions} positions")
    with torch.device("meta"):
        model = XlmrCLIP(vision, text, context_length)
    return adopt(model, sd, describe(model))


def describe(model: XlmrCLIP) -> str:
    v, t = model.config, model.text_config
    return (f"[ViT width {v.vision_width} x {v.vision_layers} layers, patch {v.vision_patch_size}, "
            f"{v.image_resolution}px; XLM-R text width {t.width} x {t.layers} layers, proj "
            f"{t.proj}; embed {v.embed_dim}]")  # fmt: skip
