"""Stress checkpoints: random CLIP weights given the statistics of trained ones (issue 13).

Trained transformers carry a few channels whose activations are tens to hundreds of times larger
than the rest ("outlier features", "massive activations"), LayerNorm gains and biases with
outliers, and weight matrices with outlier columns. Random checkpoints have none of that, so a
quantized path can look faithful on them and fail on real weights. ``stress_state_dict(sd,
kind, strength)`` injects one kind of outlier, at a strength s (1 = the plain checkpoint), into
an official-format state dict:

* ``ln``: LayerNorm gains and biases s times larger in 4 channels of every LayerNorm that
  feeds a matrix product (ln_1, ln_2, ln_post, ln_final); the following product's input
  columns are divided by s (and its bias corrected), so the function is unchanged and only
  the activations entering the matrix products carry outliers (ratio ~ s).
* ``massive``: residual-stream channels with massive activations. In an early block, 4 rows of
  the MLP's ``c_proj`` (weights and bias) are scaled so that 4 residual channels carry ~s
  times the stream's RMS on every token, persisting through the later blocks, as real
  "attention sinks" do; the text tower's first (start-of-text) token carries them too, from
  its positional embedding. Later LayerNorms normalise them, their gains on the other channels
  scaled up by the growth of the stream's std (so those keep their scale), and their outputs
  carry the normalised massive channels as outliers (up to ~sqrt(width / 4) times the rest);
  the final LayerNorm's gains on them are divided by s.
  The function changes (a different model, as sane as the plain one).
* ``columns``: outlier weight columns: 4 input channels of every linear layer (attention in/out
  projections, MLP c_fc and c_proj, the final projection) have s times larger weights; the
  producer of those channels is scaled down by s (LayerNorm gains, value rows; through the
  GELU for c_proj, which changes the function a little), so activations stay sane.
* ``bn`` (ResNet): BatchNorm scales s times larger in 4 channels of every bottleneck's bn1 and
  bn2 (an outlier in a conv's output, across its ReLU), the next conv's input channels scaled
  down by s: the same function, outlier activations throughout the trunk.
* ``pool`` (ResNet): the attention pool's input: 4 channels s times larger from the last
  bottleneck's bn3 (and positional embedding), q/k/v columns divided by s; plus outlier
  weight columns in the pool's output projection (its value rows scaled down).

``ln``, ``massive`` and ``columns`` apply to every transformer in the checkpoint (the ViT's and
the text tower); ``bn`` and ``pool`` to a ResNet image tower (and then leave the text tower
plain). ``write_stress_checkpoint`` saves the result as a plain state dict, which
``clipmodel.load`` reads like a user's checkpoint. Everything is deterministic (seeded).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

KINDS = ("ln", "massive", "columns", "bn", "pool")
TRANSFORMER_KINDS = ("ln", "massive", "columns")
RESNET_KINDS = ("bn", "pool")
STRENGTHS = (1, 10, 30, 100)
N_OUTLIERS = 4


def _channels(width: int, seed: int, n: int = N_OUTLIERS) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed + width)
    return torch.randperm(width, generator=g)[:n]


def _signs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2000 + seed)
    return torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)


def _towers(sd: dict) -> list[dict]:
    """The transformers in a state dict: prefix, blocks, width and their final LN/projection."""
    out = []
    for prefix, final_ln, proj in [
        ("visual.transformer.", "visual.ln_post.", "visual.proj"),
        ("transformer.", "ln_final.", "text_projection"),
    ]:
        blocks = sorted({int(k[len(prefix) :].split(".")[1]) for k in sd
                         if k.startswith(prefix + "resblocks.")})  # fmt: skip
        if blocks:
            width = sd[f"{prefix}resblocks.0.ln_1.weight"].shape[0]
            text = prefix == "transformer."
            out.append({"prefix": prefix, "blocks": blocks, "width": width, "text": text,
                        "final_ln": final_ln, "proj": proj})  # fmt: skip
    return out


def _scale_ln_into(sd, ln: str, lin_w: str, lin_b: str | None, ch, s: float, beta=None):
    """LN gains (and biases) x s on ``ch``; the linear's input columns / s (exact)."""
    w = sd[lin_w]
    cols = (slice(None), ch) if lin_w.endswith("weight") else (ch, slice(None))
    if beta is not None and lin_b is not None:
        # an outlier bias beta*s on the LN output, removed again from the linear's bias
        sd[ln + "bias"][ch] += beta
        lin = w[cols] if lin_w.endswith("weight") else w[cols].T
        sd[lin_b] -= lin @ beta
    sd[ln + "weight"][ch] *= s
    sd[ln + "bias"][ch] *= s
    w[cols] /= s


def _ln_kind(sd: dict, s: float, seed: int) -> None:
    for t in _towers(sd):
        ch = _channels(t["width"], seed)
        beta = _signs(len(ch), seed)
        for i in t["blocks"]:
            b = f"{t['prefix']}resblocks.{i}."
            _scale_ln_into(sd, b + "ln_1.", b + "attn.in_proj_weight", b + "attn.in_proj_bias",
                           ch, s, beta)  # fmt: skip
            _scale_ln_into(sd, b + "ln_2.", b + "mlp.c_fc.weight", b + "mlp.c_fc.bias", ch, s, beta)
        # x @ proj has no bias: gains only
        _scale_ln_into(sd, t["final_ln"], t["proj"], None, ch, s)


@torch.no_grad()
def _residual_rms(sd: dict, tower: dict, block: int) -> float:
    """RMS of the residual stream after ``block`` on a synthetic input (noise image / tokens)."""
    from clipmodel.build import build_model

    model = build_model({k: v.float() for k, v in sd.items()}).eval()
    seen: list[float] = []
    tr = model.transformer if tower["text"] else model.visual.transformer
    hook = tr.resblocks[block].register_forward_hook(
        lambda mod, inp, out: seen.append(float(out[0].float().pow(2).mean().sqrt()))
    )
    try:
        g = torch.Generator().manual_seed(7)
        if tower["text"]:
            tokens = torch.randint(1, 49000, (2, model.context_length), generator=g)
            model.encode_text(tokens)
        else:
            r = model.image_resolution
            model.visual.forward_dense(torch.randn(2, 3, r, r, generator=g))
    finally:
        hook.remove()
    return seen[0]


def _massive_kind(sd: dict, s: float, seed: int) -> None:
    for t in _towers(sd):
        ch = _channels(t["width"], seed + 1)
        sign = _signs(len(ch), seed + 1)
        k0 = 1 if len(t["blocks"]) > 2 else 0
        rms = _residual_rms(sd, t, k0)
        b = f"{t['prefix']}resblocks.{k0}.mlp.c_proj."
        sd[b + "weight"][ch] *= s  # input-dependent part, s times the others
        sd[b + "bias"][ch] = sign * s * rms  # the constant, massive part
        if t["text"]:  # the start-of-text token: an attention sink from the first block on
            sd["positional_embedding"][0, ch] += sign * s * rms
        # Later LayerNorms normalise the stream by a std that grew by f: their gains on the
        # other channels grow by f (the model stays sane), those on the massive channels stay,
        # so the normalised massive values (~sqrt(width / 4)) are outliers in their outputs.
        f = math.sqrt(1 + len(ch) * (s * s - 1) / t["width"])
        rest = torch.ones(t["width"], dtype=torch.bool)
        rest[ch] = False
        lns = [f"{t['prefix']}resblocks.{i}.{ln}." for i in t["blocks"] if i > k0
               for ln in ("ln_1", "ln_2")]  # fmt: skip
        for ln in [*lns, t["final_ln"]]:
            sd[ln + "weight"][rest] *= f
        # ... except the final one, which (as in trained models) all but drops them
        sd[t["final_ln"] + "weight"][ch] /= s


def _columns_kind(sd: dict, s: float, seed: int) -> None:
    for t in _towers(sd):
        d = t["width"]
        ch = _channels(d, seed + 2)
        hidden = _channels(4 * d, seed + 3)
        for i in t["blocks"]:
            b = f"{t['prefix']}resblocks.{i}."
            for ln, lin in (("ln_1.", "attn.in_proj_weight"), ("ln_2.", "mlp.c_fc.weight")):
                sd[b + lin][:, ch] *= s
                sd[b + ln + "weight"][ch] /= s
                sd[b + ln + "bias"][ch] /= s
            sd[b + "attn.out_proj.weight"][:, ch] *= s  # fed by the value rows 2d + ch
            sd[b + "attn.in_proj_weight"][2 * d + ch] /= s
            sd[b + "attn.in_proj_bias"][2 * d + ch] /= s
            sd[b + "mlp.c_proj.weight"][:, hidden] *= s  # through the GELU: not exact
            sd[b + "mlp.c_fc.weight"][hidden] /= s
            sd[b + "mlp.c_fc.bias"][hidden] /= s
        sd[t["proj"]][ch] *= s
        sd[t["final_ln"] + "weight"][ch] /= s
        sd[t["final_ln"] + "bias"][ch] /= s


def _bottlenecks(sd: dict) -> list[str]:
    return sorted({k.rsplit(".", 2)[0] for k in sd if k.startswith("visual.layer")
                   and k.endswith("bn1.weight")})  # fmt: skip


def _bn_kind(sd: dict, s: float, seed: int) -> None:
    for j, blk in enumerate(_bottlenecks(sd)):
        for bn, conv in (("bn1", "conv2"), ("bn2", "conv3")):
            w = sd[f"{blk}.{bn}.weight"]
            ch = _channels(w.shape[0], seed + 10 + j)
            w[ch] *= s  # relu(s x) = s relu(x): exact through the ReLU
            sd[f"{blk}.{bn}.bias"][ch] *= s
            sd[f"{blk}.{conv}.weight"][:, ch] /= s


def _pool_kind(sd: dict, s: float, seed: int) -> None:
    last = _bottlenecks(sd)[-1]
    p = "visual.attnpool."
    c = sd[p + "k_proj.weight"].shape[1]
    ch = _channels(c, seed + 20)
    sd[f"{last}.bn3.weight"][ch] *= s
    sd[f"{last}.bn3.bias"][ch] *= s
    sd[p + "positional_embedding"][:, ch] *= s
    for proj in ("q_proj", "k_proj", "v_proj"):
        sd[f"{p}{proj}.weight"][:, ch] /= s
    cols = _channels(c, seed + 21)
    sd[p + "c_proj.weight"][:, cols] *= s
    sd[p + "v_proj.weight"][cols] /= s
    sd[p + "v_proj.bias"][cols] /= s


_BUILDERS = {"ln": _ln_kind, "massive": _massive_kind, "columns": _columns_kind,
             "bn": _bn_kind, "pool": _pool_kind}  # fmt: skip


@torch.no_grad()
def stress_state_dict(sd: dict, kind: str, strength: float, seed: int = 0) -> dict:
    """A copy of the official-format state dict ``sd`` with outliers of ``kind`` at ``strength``
    (1: an unchanged copy). Raises ValueError for a kind the architecture does not have."""
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    out = {k: v.detach().clone().float() if v.is_floating_point() else v.clone()
           for k, v in sd.items()}  # fmt: skip
    resnet = "visual.attnpool.c_proj.weight" in out
    if kind in RESNET_KINDS and not resnet:
        raise ValueError(f"stress kind {kind!r} needs a ResNet image tower")
    if strength != 1:
        _BUILDERS[kind](out, float(strength), seed)
    return out


def write_stress_checkpoint(
    path: Path, arch: str, kind: str, strength: float, seed: int = 0
) -> Path:
    """Save a random ``arch`` (tests/checkpoints.py) with ``kind`` outliers as a plain state
    dict that ``clipmodel.load(path)`` reads."""
    from .checkpoints import reference_model

    sd = stress_state_dict(reference_model(arch, seed).state_dict(), kind, strength, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def stress_cases(arch: str) -> list[tuple[str, int]]:
    """(kind, strength) pairs that apply to ``arch`` (one plain case, strength 1)."""
    from .checkpoints import config_for

    kinds = TRANSFORMER_KINDS if config_for(arch).is_vit else (*RESNET_KINDS, *TRANSFORMER_KINDS)
    return [("plain", 1)] + [(k, s) for k in kinds for s in STRENGTHS if s != 1]


@torch.no_grad()
def activation_ratio(model, images: torch.Tensor | None = None, tokens=None) -> dict[str, float]:
    """Per matrix-product input of a clipmodel CLIP: max over channels of the channel's max
    |activation| divided by the median channel's (outlier ratio), worst over the layers of
    each kind ("qkv", "fc", "proj", "out", "pool"). Also "residual": the same over the
    transformers' residual streams (block outputs)."""
    import torch.nn.functional as F

    worst: dict[str, float] = {}

    def ratio(x: torch.Tensor) -> float:
        per = x.detach().float().abs().reshape(-1, x.shape[-1]).amax(0)
        return float(per.max() / per.median().clamp_min(1e-12))

    def note(name):
        def hook(mod, inp, out=None):
            worst[name] = max(worst.get(name, 0.0), ratio(inp[0]))

        return hook

    def note_out(mod, inp, out):
        worst["residual"] = max(worst.get("residual", 0.0), ratio(out[0]))

    handles = []
    for name, mod in model.named_modules():
        if name.endswith("mlp.c_fc"):
            handles.append(mod.register_forward_pre_hook(note("fc")))
        elif name.endswith("mlp.c_proj"):
            handles.append(mod.register_forward_pre_hook(note("proj")))
        elif name.endswith("attn.out_proj"):
            handles.append(mod.register_forward_pre_hook(note("out")))
        elif name.endswith(("attnpool.k_proj", "attnpool.c_proj")):
            handles.append(mod.register_forward_pre_hook(note("pool")))
        elif name.endswith(".attn") and hasattr(mod, "in_proj_weight"):
            handles.append(mod.register_forward_pre_hook(note("qkv")))
        elif name.split(".")[-2:-1] == ["resblocks"]:
            handles.append(mod.register_forward_hook(note_out))
    try:
        if images is not None:
            model.encode_image(images)
        if tokens is not None:
            model.encode_text(tokens)
    finally:
        for h in handles:
            h.remove()
    del F
    return worst
