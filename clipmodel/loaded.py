"""What reading a checkpoint yields (a leaf module: clipmodel.checkpoints and
clipmodel.convert both use it, neither imports the other at module level)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoadedCheckpoint:
    """An OpenAI-layout state dict plus what shapes alone cannot tell."""

    state_dict: dict[str, torch.Tensor]
    format: str
    sha256: str
    overrides: dict = field(default_factory=dict)
