"""Shared value types with no dependencies (a leaf: every layer may import it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    """What an index records about the model its vectors came from."""

    name: str
    checkpoint_sha256: str
    embed_dim: int
    preprocess: str  # JSON of the preprocessing settings

    def short(self) -> str:
        return f"{self.name} (sha256 {self.checkpoint_sha256[:12]})"
