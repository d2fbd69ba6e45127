"""Peak FLOP/s per device, for model FLOP utilisation (MFU).

MFU = (exact model FLOPs per token from `scaling.models.flops` x tokens/s) / peak. The peaks
are the vendors' dense (no sparsity) tensor-core figures per GPU, so MFU is comparable with
published numbers (PaLM, Megatron); fp32 uses the TF32 tensor-core peak, which is what
PyTorch's matmuls use on Ampere and later when `allow_tf32` is on, and the plain FP32 peak
otherwise. A device not in the table has no MFU (0) unless `peak_flops_per_second` is given.
"""

from __future__ import annotations

# name fragment (matched case-insensitively against torch.cuda.get_device_name) -> peaks (FLOP/s)
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "memory_bytes": 141e9},
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12, "memory_bytes": 80e9},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "memory_bytes": 80e9},
    "A100-SXM4-40GB": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12, "memory_bytes": 40e9},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12, "memory_bytes": 80e9},
    "L40S": {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12, "memory_bytes": 48e9},
    "L4": {"bf16": 121e12, "tf32": 60e12, "fp32": 30e12, "memory_bytes": 24e9},
    "A10G": {"bf16": 70e12, "tf32": 35e12, "fp32": 31.2e12, "memory_bytes": 24e9},
    "V100": {"bf16": 0.0, "tf32": 0.0, "fp32": 15.7e12, "memory_bytes": 32e9},  # no bf16 tensor cores
}
# Ray accelerator types (ray.util.accelerators) -> the table's names, for planning before a GPU exists.
ACCELERATOR_TYPES: dict[str, str] = {
    "H200": "H200", "H100": "H100", "A100-80G": "A100", "A100-40G": "A100-SXM4-40GB", "A100": "A100",
    "L40S": "L40S", "L4": "L4", "A10G": "A10G", "V100": "V100",
}


def gpu_entry(name: str) -> dict[str, float] | None:
    """The table row whose key appears in `name` (longest key first, so 'H100 PCIe' beats 'H100')."""
    lowered = name.lower()
    for key in sorted(GPU_PEAKS, key=len, reverse=True):
        if key.lower() in lowered:
            return GPU_PEAKS[key]
    return None


def peak_flops(device_name: str, precision: str, tf32: bool = True) -> float:
    """Dense peak FLOP/s of one device for `precision`; 0.0 when unknown (CPU, unlisted GPU)."""
    entry = gpu_entry(device_name)
    if entry is None:
        return 0.0
    if precision == "bf16":
        return entry["bf16"]
    return entry["tf32"] if tf32 and entry["tf32"] else entry["fp32"]


def mfu(flops_per_second: float, peak_flops_per_second: float) -> float:
    """Model FLOP utilisation in [0, 1]; 0 when the peak is unknown."""
    return flops_per_second / peak_flops_per_second if peak_flops_per_second > 0 else 0.0
