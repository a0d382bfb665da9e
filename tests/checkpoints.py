"""Random-weight CLIP checkpoints in the official formats, built with OpenAI's reference class.

``write_random_checkpoint(path, arch)`` saves a plain state dict that ``clipmodel.load(path)``
reads through the same code path as a user's checkpoint.
"""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import torch

from clipmodel.configs import OPENAI_CONFIGS
from clipmodel.model import CLIPConfig

from .reference import reference_model_module

TINY_CONFIGS = {
    # Small but complete architectures with the real vocabulary: fast enough for indexing tests.
    "tiny-vit": CLIPConfig(64, 64, 2, 64, 16, 77, 49408, 64, 1, 2),
    "tiny-rn": CLIPConfig(64, 64, (1, 1, 1, 1), 16, None, 77, 49408, 64, 1, 2),
    # Small towers with a full-size 512-d embedding: the 1M benchmark library (bench/library_1m)
    "tiny-vit-512": CLIPConfig(512, 64, 2, 128, 16, 77, 49408, 64, 1, 2),
}


def config_for(arch: str) -> CLIPConfig:
    return TINY_CONFIGS.get(arch) or OPENAI_CONFIGS[arch]


@torch.no_grad()
def reference_model(arch: str, seed: int = 0):
    """OpenAI's ``CLIP`` with official hyper-parameters, randomly initialised, in fp32.

    Parameters the reference initialises to constants (norm weights and biases, attention
    biases, BatchNorm statistics) are randomised too, so that every code path is exercised.
    """
    ref = reference_model_module()
    cfg = config_for(arch)
    torch.manual_seed(seed)
    args = astuple(cfg)[:10]  # embed .. transformer_layers, the reference's positional order
    model = ref.CLIP(*args)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or name == "logit_scale":
            continue
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif name.endswith("running_mean"):
            t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        elif t.numel() and bool((t == t.flatten()[0]).all()):  # constant-initialised
            t.add_(0.05 * torch.randn(t.shape, generator=gen))
    return model.float().eval()


def write_random_checkpoint(
    path: Path, arch: str = "tiny-vit", seed: int = 0, dtype=torch.float32
) -> Path:
    """Save a reference-built random model as a plain state dict (official key names)."""
    model = reference_model(arch, seed)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path
