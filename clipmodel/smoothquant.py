"""SmoothQuant-style migration of activation outliers into the weights, before int8 export.

Dynamic int8 quantization scales each matrix product's activations by one number per call
(per tensor): a few channels tens of times larger than the rest, as trained transformers
have after some LayerNorms, leave the other channels a handful of levels. SmoothQuant (Xiao
et al., 2023) divides each input channel c of a product by ``s_c = max|X_c|^a / max|W_c|^(1-a)``
and multiplies the weights' row c by it: the same function, with outliers shared between
activations and (per-channel quantized) weights. Here the division is folded exactly into
what produces the input, so the exported graph is unchanged in shape and speed:

* the LayerNorm before the attention input projection (ln_1), the MLP (ln_2) and the final
  projection (ln_post / ln_final): its gain and bias are divided by s;
* the attention output projection: the value rows of the input projection are divided by s
  (attention mixes values linearly, so that is exact);
* the MLP's output projection, whose input comes from the GELU: there the division is an
  explicit elementwise product in front of it (about 1% of the work of the product).

Calibration: channel maxima of the shipped calibration photos and prompts
(clipmodel.fidelity), on the fp32 model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .model import CLIP, ResidualAttentionBlock

ALPHA = 0.5
_CLAMP = (1e-2, 1e2)


def _transformers(model: CLIP) -> list[tuple[object, object, torch.Tensor | None]]:
    """(transformer, final LayerNorm, projection) of each transformer tower."""
    out = [(model.transformer, model.ln_final, model.text_projection)]
    if model.config.is_vit:
        out.append((model.visual.transformer, model.visual.ln_post, model.visual.proj))
    return out


class InputScale(nn.Module):
    """``x * scale`` per channel: a smoothing factor that no earlier operation can absorb."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


def max_recorder(seen: dict):
    """``note(key, x)``: the running max |x| per last-axis channel under ``key`` in ``seen``."""

    def note(key, x: torch.Tensor) -> None:
        m = x.detach().float().abs().reshape(-1, x.shape[-1]).amax(0)
        seen[key] = torch.maximum(seen[key], m) if key in seen else m

    return note


@torch.no_grad()
def channel_maxima(model: CLIP, images: torch.Tensor | None, tokens: torch.Tensor | None) -> dict:
    """Max |activation| per input channel of each smoothable product of ``model``, keyed by
    (place, id of its block or transformer)."""
    seen: dict[tuple, torch.Tensor] = {}
    note = max_recorder(seen)

    handles = []
    for tr, final_ln, _ in _transformers(model):
        key = ("final", id(tr))
        handles.append(final_ln.register_forward_hook(lambda m, i, o, k=key: note(k, o)))
        for b in tr.resblocks:
            for place, mod in (("ln_1", b.ln_1), ("ln_2", b.ln_2)):
                key = (place, id(b))
                handles.append(mod.register_forward_hook(lambda m, i, o, k=key: note(k, o)))
            for place, mod in (("out", b.attn.out_proj), ("c_proj", b.mlp.c_proj)):
                key = (place, id(b))
                handles.append(mod.register_forward_pre_hook(lambda m, i, k=key: note(k, i[0])))
    try:
        if images is not None and model.config.is_vit:
            for i in range(0, len(images), 16):
                model.encode_image(images[i : i + 16].float())
        if tokens is not None:
            for i in range(0, len(tokens), 64):
                model.encode_text(tokens[i : i + 64])
    finally:
        for h in handles:
            h.remove()
    return seen


def _factor(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    s = x_max.clamp_min(1e-5).pow(alpha) / w_max.clamp_min(1e-5).pow(1 - alpha)
    s = s / s.median()  # keep the overall scales where they were
    return s.clamp(*_CLAMP)


@torch.no_grad()
def smooth(
    model: CLIP, images: torch.Tensor | None, tokens: torch.Tensor | None, alpha: float = ALPHA
) -> CLIP:
    """A copy of the fp32 ``model`` with the activation outliers seen on the calibration
    ``images`` (normalised, as preprocess makes them) and ``tokens`` migrated into the weights
    (the same function up to rounding)."""
    model = copy.deepcopy(model).float().eval()
    maxima = channel_maxima(model, images, tokens)
    for tr, final_ln, proj in _transformers(model):
        for b in tr.resblocks:
            _smooth_block(b, maxima, alpha)
        x = maxima.get(("final", id(tr)))
        if x is not None:
            s = _factor(x, proj.abs().amax(1), alpha)
            final_ln.weight.div_(s)
            final_ln.bias.div_(s)
            proj.mul_(s[:, None])
    return model


def _smooth_block(b: ResidualAttentionBlock, maxima: dict, alpha: float) -> None:
    d = b.ln_1.weight.shape[0]
    x = maxima.get(("ln_1", id(b)))
    if x is not None:
        s = _factor(x, b.attn.in_proj_weight.abs().amax(0), alpha)
        b.ln_1.weight.div_(s)
        b.ln_1.bias.div_(s)
        b.attn.in_proj_weight.mul_(s)
    x = maxima.get(("ln_2", id(b)))
    if x is not None:
        fc = b.mlp.c_fc
        s = _factor(x, fc.weight.abs().amax(0), alpha)
        b.ln_2.weight.div_(s)
        b.ln_2.bias.div_(s)
        fc.weight.mul_(s)
    x = maxima.get(("out", id(b)))
    if x is not None:
        out = b.attn.out_proj
        s = _factor(x, out.weight.abs().amax(0), alpha)
        b.attn.in_proj_weight[2 * d :].div_(s[:, None])
        b.attn.in_proj_bias[2 * d :].div_(s)
        out.weight.mul_(s)
    x = maxima.get(("c_proj", id(b)))
    if x is not None:
        proj = b.mlp.c_proj
        s = _factor(x, proj.weight.abs().amax(0), alpha)
        proj.weight.mul_(s)
        b.mlp.c_proj = nn.Sequential(InputScale(1 / s), proj)
