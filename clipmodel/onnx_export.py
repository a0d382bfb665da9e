"""Exporting CLIP's two encoders to ONNX and quantizing them (the runtime: onnx_backend).

Each checkpoint is exported once from our fp32 model (``torch.onnx``, dynamic batch and text
length) and cached in ``<cache>/onnx/`` under a key made of the checkpoint's SHA256, the
architecture, the variant and the tool versions. The variants (``QUANTIZATIONS``):

* ``fp32``: the exported graphs as they are.
* ``int8``: SmoothQuant migration first (clipmodel.smoothquant, calibrated on the shipped
  calibration set), then ONNX Runtime's dynamic quantization of every matrix product
  (per-channel int8 weights, activations quantized per call). The default fast path.
* ``int8-mild``: the same, with the products that cannot be smoothed kept in float: the MLP
  output projections (their input is the GELU's) and a ResNet's attention pool.
* ``int8-dynamic``: dynamic quantization of every product without smoothing (the path before
  issue 13; kept as a measured candidate and negative control: real-weight outliers break it).

A ViT's int8 image graph reads 8-bit pixels, already cut into patches (see
onnx_backend.image_patches): the normalisation is folded into the patch embedding's weights,
so that first product runs on the integer pixels exactly (only its weights are quantized) and
the float input of the convolution disappears.

The other families (SigLIP, SigLIP2, XLM-R) export their own graphs (clipmodel.families.onnx,
float image input), smoothed by clipmodel.families.smooth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util  # noqa: F401 - the availability check's (tests patch find_spec here)
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import CLIP
from .onnx_common import (  # noqa: F401  (re-exported)
    EXPORT_VERSION,
    QUANTIZATIONS,
    OnnxUnavailableError,
    onnxruntime_available,
    require,
)
from .preprocess import MEAN, STD

__all__ = ["EXPORT_VERSION", "QUANTIZATIONS", "OnnxUnavailableError", "cache_key", "export_onnx",
           "onnxruntime_available"]  # fmt: skip

_require = require


class _ImageGraph(nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class _PatchGraph(nn.Module):
    """ViT image tower from patch embeddings (B, patches, width); see _splice_pixel_input."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model
        self.grid = model.image_resolution // model.visual.patch_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.model.visual.forward_patches(patches, self.grid, self.grid)


class _TextGraph(nn.Module):
    """Text tower on tokens already trimmed to the batch's longest sequence (see encode_text)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = tokens.shape[1]
        x = m.token_embedding(tokens) + m.positional_embedding[:n]
        causal = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)
        return m.ln_final(m.transformer.forward_at(x, eot, mask=causal)) @ m.text_projection


def checkpoint_id(model: CLIP) -> str:
    """The checkpoint's SHA256, or for a model not loaded from a file a hash of its weights."""
    sha = getattr(model, "checkpoint_sha256", None)
    if sha is None:
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
        sha = h.hexdigest()
    return str(sha)


def cache_key(model: CLIP, quantize: str) -> str:
    """What the cached graphs depend on: weights, architecture, quantization, tool versions."""
    import onnxruntime

    parts = {
        "checkpoint": checkpoint_id(model),
        "config": dataclasses.asdict(model.config),
        "quantize": quantize,
        "export": EXPORT_VERSION,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    family = getattr(model, "family", "clip")
    if family != "clip":  # (OpenAI-architecture keys stay as they were: their caches remain)
        parts["family"] = family
        text_config = getattr(model, "text_config", None)
        parts["text_config"] = dataclasses.asdict(text_config) if text_config else None
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _pixel_input(model: CLIP, quantize: str) -> bool:
    """Whether the image graph reads 8-bit pixel patches (int8 ViTs) rather than float images."""
    return quantize.startswith("int8") and model.config.is_vit


def _export_graphs(model: CLIP, out: Path, pixel_input: bool) -> tuple[Path, Path]:
    """fp32 ONNX graphs of both towers, batch (and text length) dynamic. With ``pixel_input``
    the image graph starts after the patch embedding (its input: patch embeddings)."""
    import logging
    import warnings

    # The exporter logs that torchvision's operators are skipped: noise for CLIP.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if model.dtype != torch.float32:
        raise ValueError(f"ONNX export needs the fp32 model (this one is {model.dtype})")
    model.eval()
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", min=2, max=model.context_length)
    r = model.image_resolution
    image_path, text_path = out / "image.onnx", out / "text.onnx"
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.long)
    if pixel_input:
        grid = r // model.visual.patch_size
        width = model.visual.conv1.out_channels
        image_graph, image_in = _PatchGraph(model), ("patches", torch.zeros(2, grid * grid, width))
    else:
        image_graph, image_in = _ImageGraph(model), ("image", torch.zeros(2, 3, r, r))
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            image_graph, (image_in[1],), image_path, dynamo=True,
            input_names=[image_in[0]], output_names=["image_features"],
            dynamic_shapes={image_in[0]: {0: batch}}, external_data=False, verbose=False,
        )  # fmt: skip
        torch.onnx.export(
            _TextGraph(model), (tokens, torch.tensor([2, 2])), text_path, dynamo=True,
            input_names=["tokens", "eot"], output_names=["text_features"],
            dynamic_shapes={"tokens": {0: batch, 1: length}, "eot": {0: batch}},
            external_data=False, verbose=False,
        )  # fmt: skip
    return image_path, text_path


_SHAPE_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Gather", "Slice", "Transpose", "Identity",
              "Flatten", "Split", "Concat", "Cast"}  # fmt: skip


def _float_matmuls(path: Path, everything: bool) -> list[str]:
    """MatMul nodes that ``int8-mild`` keeps in float: those fed by the MLP's activation (its
    output projection), or all of them (``everything``: a ResNet's attention pool)."""
    import onnx

    g = onnx.load(os.fspath(path)).graph
    producer = {out: n for n in g.node for out in n.output}
    names = []
    for n in g.node:
        if n.op_type != "MatMul":
            continue
        if everything:
            names.append(n.name)
            continue
        src = producer.get(n.input[0])
        while src is not None and src.op_type in _SHAPE_OPS:
            src = producer.get(src.input[0])
        if src is not None and src.op_type in ("Mul", "Gelu", "Sigmoid", "Erf"):
            names.append(n.name)
    return names


def _quantize(src: Path, dst: Path, mild: bool = False, resnet_image: bool = False) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # The quantizer logs advice on the root logger (logging.warning), which would also
    # configure logging for the whole process; keep both from happening.
    root = logging.getLogger()
    quiet, guard = logging.Filter("onnxruntime-quantization-silenced"), logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(guard)
    folded = dst.with_name(f"folded-{dst.name}")
    try:
        # Folds constants first (the recommended pre-processing): a weight sliced from a
        # parameter in the graph (the last block's query, see Transformer.forward_at) must be
        # an initializer to be quantized.
        quant_pre_process(src, folded, skip_symbolic_shape=True)
        exclude = _float_matmuls(folded, resnet_image) if mild else []
        quantize_dynamic(
            folded, dst, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
        )  # fmt: skip
    finally:
        root.removeFilter(quiet)
        root.removeHandler(guard)
        folded.unlink(missing_ok=True)


def _pixel_embedding(model: CLIP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch embedding as a product with raw 8-bit pixel patches (see image_patches):
    per-output-channel int8 weights (K, width), their scales (width,) and a bias (width,).

    Normalisation ``x = p / (255 std) - mean / std`` is folded in: the weights are scaled by
    1 / (255 std) per colour channel and ``-W . (mean / std)`` becomes the bias.
    """
    w = model.visual.conv1.weight.detach().double().cpu()  # (width, 3, P, P)
    std, mean = torch.tensor(STD, dtype=torch.float64), torch.tensor(MEAN, dtype=torch.float64)
    scaled = w / (255.0 * std)[None, :, None, None]
    bias = -(w * (mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))
    # rows in the order image_patches lays a patch out: (row, column, colour)
    matrix = scaled.permute(2, 3, 1, 0).reshape(-1, w.shape[0])
    scale = (matrix.abs().amax(dim=0) / 127.0).clamp_min(1e-12)
    q = torch.round(matrix / scale).clamp(-127, 127).to(torch.int8)
    return q.numpy(), scale.float().numpy(), bias.float().numpy()


def _splice_pixel_input(path: Path, model: CLIP) -> None:
    """Put the integer patch embedding in front of a _PatchGraph: input ``pixels`` (B, patches,
    P*P*3) uint8 -> MatMulInteger -> float, scaled, biased -> the graph's ``patches``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(os.fspath(path))
    g = m.graph
    (old,) = g.input
    q, scale, bias = _pixel_embedding(model)
    batch = old.type.tensor_type.shape.dim[0]
    n = old.type.tensor_type.shape.dim[1].dim_value
    pixels = helper.make_tensor_value_info(
        "pixels", TensorProto.UINT8, [batch.dim_param or batch.dim_value, n, q.shape[0]]
    )
    g.initializer.extend([
        numpy_helper.from_array(q, "pixel_embed_weight"),
        numpy_helper.from_array(np.zeros((), np.uint8), "pixel_zero_point"),
        numpy_helper.from_array(scale, "pixel_embed_scale"),
        numpy_helper.from_array(bias, "pixel_embed_bias"),
    ])  # fmt: skip
    nodes = [
        helper.make_node(
            "MatMulInteger",
            ["pixels", "pixel_embed_weight", "pixel_zero_point"],
            ["pixel_embed_int"],
        ),  # fmt: skip
        helper.make_node("Cast", ["pixel_embed_int"], ["pixel_embed_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pixel_embed_float", "pixel_embed_scale"], ["pixel_embed_scaled"]),
        helper.make_node("Add", ["pixel_embed_scaled", "pixel_embed_bias"], [old.name]),
    ]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    g.input.remove(old)
    g.input.append(pixels)
    onnx.save(m, os.fspath(path))


def smoothed(model: CLIP) -> CLIP:
    """``model`` with its activation outliers migrated into the weights (SmoothQuant),
    calibrated on the shipped calibration photos and prompts (clipmodel.fidelity)."""
    from .fidelity import calibration_inputs
    from .smoothquant import smooth

    images, tokens = calibration_inputs(model.image_resolution)
    return smooth(model, images, tokens)


def export_onnx(
    model: CLIP, cache_dir: str | os.PathLike, quantize: str = "int8"
) -> tuple[Path, Path]:
    """The (image, text) ONNX files for ``model``, exported and quantized on first use
    (``quantize``: one of QUANTIZATIONS, see the module docs).

    Files appear atomically (written in a temporary folder beside them, then renamed), so an
    interrupted export leaves nothing half-written and concurrent exports are harmless.
    """
    _require()
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    root = Path(cache_dir).expanduser() / "onnx"
    key = cache_key(model, quantize)
    image_path, text_path = root / f"{key}-image.onnx", root / f"{key}-text.onnx"
    if image_path.is_file() and text_path.is_file():
        return image_path, text_path
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        if getattr(model, "family", "clip") == "clip":
            pixel_input = _pixel_input(model, quantize)
            graph_model = smoothed(model) if quantize in ("int8", "int8-mild") else model
            staged = list(_export_graphs(graph_model, work, pixel_input))
            del graph_model
            resnet = not model.config.is_vit
        else:  # SigLIP, XLM-R: float image input (clipmodel.families.onnx, .smooth)
            from .families.onnx import export_graphs
            from .families.smooth import smoothed as family_smoothed

            pixel_input, resnet = False, False
            smooth = quantize in ("int8", "int8-mild")
            graph_model = family_smoothed(model) if smooth else model
            staged = list(export_graphs(graph_model, work))
            del graph_model
        if quantize.startswith("int8"):
            mild = quantize == "int8-mild"
            for i, src in enumerate(staged):
                staged[i] = work / f"int8-{src.name}"
                extra = (True, i == 0 and resnet) if mild else ()
                _quantize(src, staged[i], *extra)
            if pixel_input:
                _splice_pixel_input(staged[0], model)
        # Both graphs are complete before either is published; the image file last, as the
        # cache check above needs both.
        os.replace(staged[1], text_path)
        os.replace(staged[0], image_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image_path, text_path
