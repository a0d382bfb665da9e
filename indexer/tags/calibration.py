"""Tag thresholds for the model an index was built with.

The vocabulary's cosine thresholds are tuned for OpenAI-style CLIP models (the default 0.25
marks "the photo shows it" for a ViT-B/32). A sigmoid model (SigLIP, SigLIP2) says itself
where that is: its match probability ``sigmoid(scale * cos + bias)`` is one half at
``cos = -bias / scale``. For such a model every standalone threshold is moved by the same
amount, so that the default one lands on that point (per-tag adjustments keep their offsets),
and exclusive groups use the model's own ``scale`` as softmax temperature. CLIP models'
vocabularies are used as written.
"""

from __future__ import annotations

import dataclasses
import json

from indexer.tags.vocabulary import DEFAULT_THRESHOLD, Vocabulary
from indexer.types import ModelIdentity


def sigmoid_calibration(identity: ModelIdentity | None) -> tuple[float, float] | None:
    """(scale, bias) of a sigmoid model as its index records them (the encoder's identity),
    else None."""
    if identity is None:
        return None
    try:
        settings = json.loads(identity.preprocess or "{}")
    except ValueError:
        return None
    sig = settings.get("sigmoid") if isinstance(settings, dict) else None
    if not isinstance(sig, dict):
        return None
    return float(sig["logit_scale"]), float(sig["logit_bias"])


def calibrated(vocab: Vocabulary, scale: float, bias: float) -> Vocabulary:
    """``vocab`` with its cosine thresholds moved to the sigmoid model's own midpoint."""
    shift = -bias / scale - DEFAULT_THRESHOLD
    tags = {}
    for name, tag in vocab.tags.items():
        if tag.threshold is not None and not vocab.is_exclusive(tag):
            tag = dataclasses.replace(tag, threshold=round(tag.threshold + shift, 6))
        tags[name] = tag
    groups = {name: g if g.exclusive or g.threshold is None
              else dataclasses.replace(g, threshold=round(g.threshold + shift, 6))
              for name, g in vocab.groups.items()}  # fmt: skip
    return dataclasses.replace(vocab, tags=tags, groups=groups, logit_scale=float(scale),
                               default_threshold=round(vocab.default_threshold + shift, 6))  # fmt: skip


def for_model(vocab: Vocabulary, identity: ModelIdentity | None) -> Vocabulary:
    """The vocabulary that scores an index of ``identity``'s model."""
    cal = sigmoid_calibration(identity)
    return vocab if cal is None else calibrated(vocab, *cal)
