"""SmoothQuant for the families (clipmodel.smoothquant explains the method): activation
outliers migrated into the weights before the int8 export, folded exactly into what produces
each product's input.

* SigLIP / SigLIP2, both towers: each block's ``layer_norm1`` (into q/k/v) and ``layer_norm2``
  (into ``fc1``), the value rows (into ``out_proj``), an explicit scale before ``fc2``; the
  text tower's ``final_layer_norm`` (into its head); the vision head's ``post_layernorm`` (into
  the keys and values of the pooling attention: its query, the probe, is not normalised),
  its ``layernorm`` (into ``fc1``) and ``fc2``.
* XLM-R models: the image tower (OpenAI's ViT, smoothed as CLIP's is). The XLM-R text tower
  is post-LayerNorm: each LayerNorm's output is also the residual, so nothing can absorb a
  factor there; it is exported as it is.

Calibration: channel maxima over the shipped calibration set, read through the model's own
preprocessing and tokenizer (clipmodel.fidelity.model_calibration).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..smoothquant import ALPHA, InputScale, _factor, _smooth_block, max_recorder

__all__ = ["smoothed"]


def _places(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(key, module, "out" | "in"): whose output (a LayerNorm's) or input is measured."""
    places = []
    if getattr(model, "family", "") in ("siglip", "siglip2"):
        for tower in (model.vision_model, model.text_model):
            for i, layer in enumerate(tower.encoder.layers):
                base = f"{id(tower)}.{i}"
                places += [(f"{base}.ln1", layer.layer_norm1, "out"),
                           (f"{base}.ln2", layer.layer_norm2, "out"),
                           (f"{base}.out", layer.self_attn.out_proj, "in"),
                           (f"{base}.fc2", layer.mlp.fc2, "in")]  # fmt: skip
        head = model.vision_model.head
        places += [("post", model.vision_model.post_layernorm, "out"),
                   ("head.ln", head.layernorm, "out"), ("head.fc2", head.mlp.fc2, "in"),
                   ("text.final", model.text_model.final_layer_norm, "out")]  # fmt: skip
    else:  # XLM-R: OpenAI's ViT blocks, keyed as clipmodel.smoothquant keys them
        for b in model.visual.transformer.resblocks:
            places += [(("ln_1", id(b)), b.ln_1, "out"), (("ln_2", id(b)), b.ln_2, "out"),
                       (("out", id(b)), b.attn.out_proj, "in"),
                       (("c_proj", id(b)), b.mlp.c_proj, "in")]  # fmt: skip
        places.append(("visual.final", model.visual.ln_post, "out"))
    return places


@torch.no_grad()
def channel_maxima(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Max |activation| per input channel of each smoothable product, on the calibration set."""
    seen: dict = {}
    note = max_recorder(seen)
    handles = []
    for key, mod, where in _places(model):
        if where == "out":
            handles.append(mod.register_forward_hook(lambda m, i, o, k=key: note(k, o)))
        else:
            handles.append(mod.register_forward_pre_hook(lambda m, i, k=key: note(k, i[0])))
    try:
        for i in range(0, len(images), 16):
            model.encode_image(images[i : i + 16].float())
        if getattr(model, "family", "") in ("siglip", "siglip2"):  # XLM-R's text: not smoothed
            for i in range(0, len(tokens), 64):
                model.encode_text(tokens[i : i + 64])
    finally:
        for h in handles:
            h.remove()
    return seen


def _fold(ln: nn.LayerNorm, weights: list[torch.Tensor], x: torch.Tensor | None, alpha: float):
    """Divide the LayerNorm's channels by s and multiply the products' input columns by it."""
    if x is None:
        return
    w_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0)
    s = _factor(x, w_max, alpha)
    ln.weight.div_(s)
    ln.bias.div_(s)
    for w in weights:
        w.mul_(s)


def _fold_output(mlp: nn.Module, x: torch.Tensor | None, alpha: float) -> None:
    """The product after the activation: an explicit per-channel scale in front of it."""
    if x is None:
        return
    s = _factor(x, mlp.fc2.weight.abs().amax(0), alpha)
    mlp.fc2.weight.mul_(s)
    mlp.fc2 = nn.Sequential(InputScale(1 / s), mlp.fc2)


def _smooth_siglip(model: nn.Module, m: dict, alpha: float) -> None:
    for tower in (model.vision_model, model.text_model):
        for i, layer in enumerate(tower.encoder.layers):
            base, att = f"{id(tower)}.{i}", layer.self_attn
            _fold(layer.layer_norm1, [att.q_proj.weight, att.k_proj.weight, att.v_proj.weight],
                  m.get(f"{base}.ln1"), alpha)  # fmt: skip
            _fold(layer.layer_norm2, [layer.mlp.fc1.weight], m.get(f"{base}.ln2"), alpha)
            if (x := m.get(f"{base}.out")) is not None:  # values mix linearly: exact
                s = _factor(x, att.out_proj.weight.abs().amax(0), alpha)
                att.v_proj.weight.div_(s[:, None])
                att.v_proj.bias.div_(s)
                att.out_proj.weight.mul_(s)
            _fold_output(layer.mlp, m.get(f"{base}.fc2"), alpha)
    head = model.vision_model.head
    d = head.attention.in_proj_weight.shape[1]
    _fold(model.vision_model.post_layernorm, [head.attention.in_proj_weight[d:]],
          m.get("post"), alpha)  # fmt: skip
    _fold(head.layernorm, [head.mlp.fc1.weight], m.get("head.ln"), alpha)
    _fold_output(head.mlp, m.get("head.fc2"), alpha)
    _fold(model.text_model.final_layer_norm, [model.text_model.head.weight],
          m.get("text.final"), alpha)  # fmt: skip


def _smooth_vit(model: nn.Module, m: dict, alpha: float) -> None:
    for b in model.visual.transformer.resblocks:
        _smooth_block(b, m, alpha)
    if (x := m.get("visual.final")) is not None:
        proj = model.visual.proj
        s = _factor(x, proj.abs().amax(1), alpha)
        model.visual.ln_post.weight.div_(s)
        model.visual.ln_post.bias.div_(s)
        proj.mul_(s[:, None])


@torch.no_grad()
def smoothed(model: nn.Module, alpha: float = ALPHA) -> nn.Module:
    """A copy of the fp32 family ``model`` with its calibration outliers migrated into the
    weights (the same function up to rounding)."""
    from ..fidelity import model_calibration

    images, tokens = model_calibration(model)
    model = copy.deepcopy(model).float().eval()
    maxima = channel_maxima(model, images, tokens)
    if getattr(model, "family", "") in ("siglip", "siglip2"):
        _smooth_siglip(model, maxima, alpha)
    else:
        _smooth_vit(model, maxima, alpha)
    return model
