"""ONNX graphs of the families' two encoders (SigLIP, SigLIP2, XLM-R / M-CLIP), for the
int8 ONNX Runtime fast path (clipmodel.onnx_export publishes and quantizes them; the runtime
is clipmodel.onnx_backend.OnnxCLIP, as for CLIP).

The image graph is the family's ``encode_image`` on normalised float images (B, 3, R, R). The
text graph reads token ids only:

* SigLIP / SigLIP2: ids padded to the full context (the models were trained so and read the
  last position), batch dynamic.
* XLM-R: ids (B, L), batch and length dynamic; the padding mask is computed in the graph from
  the pad id, as the torch model does. Padding is masked out of every attention and of the
  mean pooling, so the caller trims the columns after the longest text (:func:`text_feed`).

``int8`` and ``int8-mild`` are smoothed first (clipmodel.families.smooth: SigLIP's towers and
XLM-R's image tower), ``int8-dynamic`` is plain dynamic per-channel int8. The load-time
self-check (clipmodel.fastpath) decides what runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["export_graphs", "text_feed"]


class _ImageGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class _SiglipText(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.tower = model.text_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower(tokens)


class _XlmrText(nn.Module):
    """open_clip's XLM-R text encoder without the torch model's data-dependent trimming."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.text = model.text
        self.pad_id = model.text.config.pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.pad_id).long()
        h = self.text.transformer(tokens, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.text.proj((h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1))


def _text_graph(model: nn.Module) -> tuple[nn.Module, bool]:
    """The text graph of ``model`` and whether its length is dynamic."""
    family = getattr(model, "family", "clip")
    if family in ("siglip", "siglip2"):
        return _SiglipText(model), False
    if family == "xlm-roberta":
        return _XlmrText(model), True
    raise ValueError(f"no ONNX text graph for family {family!r}")


def export_graphs(model: nn.Module, out: Path) -> tuple[Path, Path]:
    """fp32 ONNX graphs (image, text) of a family ``model`` (fp32, eval) written into ``out``."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if model.dtype != torch.float32:
        raise ValueError(f"ONNX export needs the fp32 model (this one is {model.dtype})")
    model.eval()
    text_graph, dynamic_length = _text_graph(model)
    batch = torch.export.Dim("batch")
    r = model.image_resolution
    n = model.context_length
    image_path, text_path = out / "image.onnx", out / "text.onnx"
    tokens = torch.ones(2, n, dtype=torch.long)
    text_shapes = {0: batch}
    if dynamic_length:
        text_shapes[1] = torch.export.Dim("length", min=2, max=n)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ImageGraph(model), (torch.zeros(2, 3, r, r),), image_path, dynamo=True,
            input_names=["image"], output_names=["image_features"],
            dynamic_shapes={"image": {0: batch}}, external_data=False, verbose=False,
        )  # fmt: skip
        torch.onnx.export(
            text_graph, (tokens,), text_path, dynamo=True, input_names=["tokens"],
            output_names=["text_features"], dynamic_shapes={"tokens": text_shapes},
            external_data=False, verbose=False,
        )  # fmt: skip
    return image_path, text_path


def text_feed(family: str, tokens: np.ndarray, pad_id: int | None) -> dict[str, np.ndarray]:
    """The text graph's input for token rows (N, context): as they are for SigLIP; for XLM-R
    trimmed after the longest text (padding is masked: the result is the same)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    if family == "xlm-roberta" and pad_id is not None and tokens.size:
        n = max(2, int((tokens != pad_id).sum(axis=1).max()))
        if (tokens[:, n:] == pad_id).all():  # right-padded (a left-padded batch stays whole)
            tokens = np.ascontiguousarray(tokens[:, :n])
    return {"tokens": tokens}
