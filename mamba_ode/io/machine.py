"""What the machine offers a model: the devices it can run on and the memory it has left.

`check_memory` sizes a model from its config alone (parameters × bytes of the dtype) and
compares that with the memory available on the target device, before anything is allocated, so a
config that asks for ``num_hidden_layers: 10**9`` is refused at once instead of exhausting memory.
There is no fixed cap: a 2.8B-parameter model loads wherever it fits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ._fields import file_name_of
from .config import AnyConfig
from .keys import parameter_count

__all__ = ["check_device", "check_dtype", "available_memory", "check_memory", "format_bytes"]

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def check_dtype(dtype: Any, name: str = "dtype", where: str = "load") -> torch.dtype:
    """A floating torch dtype.

    Arguments:
        dtype: the argument.
        name: the argument's name for messages.
        where: the function's name for messages.

    Returns:
        The dtype.

    Raises:
        TypeError: for anything but a floating ``torch.dtype``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{where}: argument {name!r} must be a floating torch.dtype (torch.float32, "
                        f"torch.float64, torch.bfloat16, torch.float16), got {dtype!r}")
    return dtype


def check_device(device: Any, name: str = "device", where: str = "load") -> torch.device:
    """A device this machine has: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N < the number of GPUs),
    ``"mps"`` where available, or such a ``torch.device``.

    Arguments:
        device: the argument.
        name: the argument's name for messages.
        where: the function's name for messages.

    Returns:
        The ``torch.device``.

    Raises:
        TypeError: for anything but a str or a ``torch.device``.
        ValueError: for an unknown device or one this machine does not have.
    """
    if isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"{where}: argument {name!r} must be 'cpu', 'cuda', 'cuda:N' or 'mps', "
                             f"got {device!r}") from None
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(f"{where}: argument {name!r} must be a str or a torch.device, got {type(device).__name__}")
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"{where}: argument {name!r} is {str(dev)!r} but CUDA is not available on this machine "
                             f"(torch {torch.__version__}, {build}); use device='cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{where}: argument {name!r} is {str(dev)!r} but this machine has {count} CUDA "
                             f"device(s): use 'cuda:0' … 'cuda:{count - 1}'")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{where}: argument {name!r} is 'mps' but MPS is not available on this machine; "
                             "use device='cpu'")
        return dev
    raise ValueError(f"{where}: argument {name!r} must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {str(dev)!r} "
                     f"(device type {dev.type!r} is not supported)")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _host_available() -> int | None:
    """Available RAM in bytes (MemAvailable, capped by a cgroup v2 limit), or None when unknown."""
    avail: int | None = None
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = None
    limit, used = _read_int(_CGROUP / "memory.max"), _read_int(_CGROUP / "memory.current")
    if limit is not None and used is not None:
        left = max(limit - used + _reclaimable_cache(), 0)
        avail = left if avail is None else min(avail, left)
    return avail


def _reclaimable_cache() -> int:
    """Bytes of inactive page cache in this cgroup (counted in memory.current, yet freed on demand)."""
    try:
        for line in (_CGROUP / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "inactive_file" and value.strip().isdigit():
                return int(value)
    except (OSError, UnicodeDecodeError):
        pass
    return 0


def available_memory(device: torch.device) -> int | None:
    """Bytes of memory free for a model on ``device`` (None when the machine does not say).

    Arguments:
        device: a checked device (`check_device`).

    Returns:
        Free device memory for CUDA; available RAM (MemAvailable, a cgroup limit, or
        ``os.sysconf``) for the CPU and for MPS (unified memory).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _host_available()


def format_bytes(n: int) -> str:
    """A byte count in binary units (``"1.5 GiB"``; astronomically large counts as a power of two).

    Arguments:
        n: bytes (a Python int of any size).

    Returns:
        The text.
    """
    if n < 1024:
        return f"{n} B"
    if n >= 1024**6:
        return f"2^{n.bit_length() - 1} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        x /= 1024
        if x < 1024 or unit == "PiB":
            break
    return f"{x:.1f} {unit}"


def _count(n: int) -> str:
    """A parameter count with thousands separators (about 10^k when very large)."""
    return f"{n:,}" if n < 10**15 else f"about 10^{int((n.bit_length() - 1) * math.log10(2))}"


def check_memory(config: AnyConfig, dtype: torch.dtype, device: torch.device, where: str,
                 available: int | None = None) -> int:
    """Refuse a model whose weights alone would not fit in the memory the device has left.

    The estimate is parameters × bytes of ``dtype``, from the config alone (no table per layer):
    a lower bound of what loading takes (the weights file is read too).

    Arguments:
        config: the architecture.
        dtype: the dtype the model will have.
        device: where it will live.
        where: the config file's name for messages.
        available: bytes available (None: ask the machine, `available_memory`).

    Returns:
        The estimated bytes.

    Raises:
        ValueError: when the estimate exceeds the available memory, with both numbers, the sizes from
            the config (named as in the file) and how to proceed.
    """
    params = parameter_count(config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = params * itemsize
    avail = available_memory(device) if available is None else available
    if avail is None or need <= avail:
        return need
    sizes = ", ".join(f"{file_name_of(f, config.layout)} = {_count(getattr(config, f))}"
                      for f in ("n_layer", "d_model", "vocab_size_unpadded", "d_state", "expand"))
    raise ValueError(f"{where}: the model needs about {format_bytes(need)} ({_count(params)} parameters × "
                     f"{itemsize} bytes of {str(dtype).replace('torch.', '')}) but only {format_bytes(avail)} is "
                     f"available on {device}; check the sizes in the config ({sizes}), load with a smaller dtype "
                     "(dtype=torch.bfloat16), or use a machine or device with more memory")
