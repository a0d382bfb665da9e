"""What this CPU computes natively (read from /proc/cpuinfo; no torch)."""

from __future__ import annotations

__all__ = ["cpu_has_int8_dot", "cpu_has_native_bf16"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86 / Arm
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matrix maths natively (AVX512-BF16 or AMX-BF16).

    Such CPUs run CLIP about twice as fast in bf16 as in fp32, with embeddings whose cosine
    to the fp32 ones stays above 0.9999 (bench/bench_model.py measures it).
    """
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """True when this CPU has 8-bit dot-product instructions (x86 VNNI, Arm dotprod).

    ONNX Runtime's int8 products are fast and exact there; on x86 without VNNI they use an
    instruction that can saturate (ONNX Runtime's quantization guide), so int8 is not chosen
    automatically on such CPUs.
    """
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
