"""Device selection: `device: auto` means CUDA when present, else CPU; same code path for both."""

from __future__ import annotations

import platform


def resolve_device(device: str | None = "auto") -> str:
    """`auto` | `cpu` | `cuda` | `cuda:N` → a torch device string; asking for CUDA without one fails clearly."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device {device!r} requested but CUDA is not available (use device: auto or cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise SystemExit(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")
    return device


def device_name(device: str) -> str:
    """Human-readable hardware name for the metrics record (GPU model, or CPU model and core count)."""
    import os

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def hardware_record(device: str, dtype: str) -> dict:
    """What the throughput numbers were measured on."""
    import torch

    return {
        "device": device,
        "device_name": device_name(device),
        "dtype": dtype,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
    }
