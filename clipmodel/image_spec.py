"""A model's image preprocessing as data, and its description: no image library here (a text
query records the model's identity, which names the preprocessing, without importing Pillow)."""

from __future__ import annotations

from dataclasses import dataclass

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSpec:
    """A model's image preprocessing: size, normalisation, and whether the short side is
    resized then centre-cropped (OpenAI, open_clip) or the image squashed to size x size
    without crop (SigLIP)."""

    size: int
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    crop: bool = True
    resample: str = "bicubic"  # or "bilinear"

    @property
    def is_openai(self) -> bool:
        """True for OpenAI's pipeline (short side, centre crop, OpenAI's mean and std)."""
        return (self.crop and tuple(self.mean) == MEAN and tuple(self.std) == STD
                and self.resample == "bicubic")  # fmt: skip


def describe(n_px: int, spec: ImageSpec | None = None) -> str:
    """``repr`` of :class:`clipmodel.preprocess.Preprocess` (part of an index's model identity)."""
    s = spec if spec is not None else ImageSpec(n_px)
    if s.is_openai:
        return (f"Preprocess(Resize({n_px}, bicubic), CenterCrop({n_px}), RGB, "
                f"ToTensor, Normalize(mean={MEAN}, std={STD}))")  # fmt: skip
    resize = (f"Resize({n_px}, {s.resample}), CenterCrop({n_px})" if s.crop
              else f"Resize(({n_px}, {n_px}), {s.resample})")  # fmt: skip
    return f"Preprocess({resize}, RGB, ToTensor, Normalize(mean={s.mean}, std={s.std}))"
