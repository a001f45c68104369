"""Which torch device a brain computes on: `cpu` (the default, and what CI runs), `cuda`, `auto`."""

from __future__ import annotations

import torch

from bus.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when available, else `cpu`; ConfigError for CUDA where there is none."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
        return device
    raise ConfigError(f"unknown device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
