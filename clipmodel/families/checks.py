"""Validation shared by the family loaders: keys and shapes against the built model, loudly."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..build import CheckpointFormatError


def count_indices(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def need(sd: Mapping[str, torch.Tensor], keys: list[str], what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise CheckpointFormatError(
            f"not a {what} checkpoint: missing {', '.join(missing[:10])} "
            f"(found {len(sd)} entries, e.g. {', '.join(list(sd)[:5])})"
        )


def agree(where: str, name: str, config_value, shape_value) -> None:
    """A setting config.json states must be what the tensors' shapes say."""
    if config_value is not None and int(config_value) != int(shape_value):
        raise CheckpointFormatError(
            f"{where}: {name} is {config_value} but the weights' shapes say {shape_value}"
        )


def adopt(model: nn.Module, sd: Mapping[str, torch.Tensor], description: str) -> nn.Module:
    """Load ``sd`` into ``model`` (built on the meta device) after checking every key and
    shape; raises CheckpointFormatError naming what is missing, unexpected or mis-shaped."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mis_shaped = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in sd and sd[k].shape != v.shape]  # fmt: skip
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", mis_shaped)):  # fmt: skip
        if items:
            problems.append(f"{label}: {', '.join(items[:15])}" + (" ..." if len(items) > 15 else ""))
    if problems:
        raise CheckpointFormatError(
            f"checkpoint does not match the inferred architecture {description}: "
            + " | ".join(problems)
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                          assign=True)  # fmt: skip
    return model.float().eval()
