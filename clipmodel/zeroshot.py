"""Zero-shot helpers: normalised embeddings, long text, prompt-ensemble classifiers, similarity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import CLIP
from .preprocess import ImageInput, Preprocess, for_model
from .templates import DEFAULT_TEMPLATES
from .tokenizer import model_tokenizer, split_windows


def _device(model: CLIP) -> torch.device:
    device = getattr(model, "device", None)  # OnnxCLIP (no parameters) says where it runs
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _out(x: torch.Tensor, numpy: bool):
    return x.detach().float().cpu().numpy() if numpy else x


@torch.no_grad()
def embed_texts(
    model: CLIP, texts: Sequence[str], batch_size: int = 256, truncate: bool = True
) -> torch.Tensor:
    """L2-normalised float32 text embeddings (N, D)."""
    chunks = []
    tok = model_tokenizer(model)
    for i in range(0, len(texts), batch_size):
        tokens = tok(list(texts[i : i + batch_size]), truncate=truncate)
        chunks.append(F.normalize(model.encode_text(tokens.to(_device(model))).float(), dim=-1))
    if not chunks:
        return torch.empty(0, model.embed_dim)
    return torch.cat(chunks)


@torch.no_grad()
def embed_images(
    model: CLIP,
    images: Iterable[ImageInput],
    preprocess: Preprocess | None = None,
    batch_size: int = 32,
) -> torch.Tensor:
    """L2-normalised float32 image embeddings (N, D) from any supported image inputs."""
    preprocess = preprocess or for_model(model)
    images = list(images)
    chunks = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(im) for im in images[i : i + batch_size]]).to(
            _device(model)
        )
        chunks.append(F.normalize(model.encode_image(batch).float(), dim=-1))
    if not chunks:
        return torch.empty(0, model.embed_dim)
    return torch.cat(chunks)


@torch.no_grad()
def encode_text_long(
    model: CLIP, texts: Sequence[str], stride: int | None = None, batch_size: int = 256
) -> torch.Tensor:
    """Normalised embeddings of texts of any length (N, D).

    Text that fits the context is encoded as is. Longer text is cut into windows of
    ``context_length`` less the model's own tokenizer's special tokens (overlapping by
    ``stride``, default half a window), each
    wrapped in start/end tokens and encoded; the normalised window embeddings are averaged,
    weighted by window length, and renormalised. All windows of all texts are encoded
    together in batches.
    """
    tok = model_tokenizer(model)
    windows, owner = split_windows(texts, tok.encode, tok.width, stride)
    if not windows:
        return torch.empty(0, model.embed_dim)
    # Similar lengths together: each batch is trimmed to its longest sequence.
    order = sorted(range(len(windows)), key=lambda j: len(windows[j]))
    emb = torch.empty(len(windows), model.embed_dim)
    for lo in range(0, len(order), batch_size):
        part = order[lo : lo + batch_size]
        tokens = tok.pad([tok.wrap(windows[j]) for j in part])
        out = model.encode_text(tokens.to(_device(model))).float().cpu()
        emb[part] = F.normalize(out, dim=-1)
    weights = torch.tensor([max(len(w), 1) for w in windows], dtype=emb.dtype)
    sums = torch.zeros(len(texts), model.embed_dim).index_add_(
        0, torch.tensor(owner), emb * weights[:, None]
    )
    return F.normalize(sums, dim=-1)


def zeroshot_classifier(
    model: CLIP, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """Class weights (D, C): per class, the normalised mean of its normalised prompt embeddings."""
    weights = []
    for name in classnames:
        emb = embed_texts(model, [t.format(name) for t in templates])
        weights.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(weights, dim=1)


def similarity(a, b, numpy: bool = False):
    """Cosine similarity matrix between two batches of embeddings (numpy or torch inputs)."""
    ta = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).float()
    tb = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).float()
    sims = F.normalize(ta, dim=-1) @ F.normalize(tb, dim=-1).T
    return _out(sims, numpy)


@torch.no_grad()
def classify(
    model: CLIP,
    images: Sequence[ImageInput],
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    numpy: bool = True,
):
    """Zero-shot class probabilities (N images, C labels), softmax over the model's scaled logits
    (SigLIP: each label's own sigmoid of scale * cosine + bias, as it was trained).

    Labels are used verbatim as prompts unless ``templates`` is given (then "{}" templates
    are filled with each label and ensembled).
    """
    if not labels:
        raise ValueError("classify needs at least one label")
    if templates:
        text = zeroshot_classifier(model, labels, templates).T
    else:
        text = embed_texts(model, list(labels))
    image = embed_images(model, images, preprocess)
    logits = model.logit_scale.exp().float() * image @ text.T.to(image.device)
    bias = getattr(model, "logit_bias", None)
    if bias is not None:  # SigLIP: independent sigmoid probabilities per label
        return _out(torch.sigmoid(logits + bias.float()), numpy)
    return _out(logits.softmax(dim=-1), numpy)
