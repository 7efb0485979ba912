"""Numeric precision: which devices compute bf16 natively, and bf16's numerics emulated at fp32 speed elsewhere."""
from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where native_bf16(device), fp32 elsewhere

_aten = torch.ops.aten
# the kernels whose bf16 versions are slow reference code on CPUs without AVX512-BF16/AMX (profiled: 15-20x fp32)
_MATRIX_KERNELS = frozenset({_aten.convolution.default, _aten.convolution_backward.default, _aten.mm.default,
                             _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default})


@lru_cache(maxsize=1)  # asked on every training iteration: read /proc/cpuinfo once
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset({f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()})


def native_bf16(device: str | torch.device, cpu_flags: set[str] | None = None) -> bool:
    """Whether `device` computes bf16 natively: a CUDA device that supports it, or a CPU with AVX512-BF16 or AMX
    (flags read from /proc/cpuinfo, or asked of torch where there is none)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
        if not cpu_flags:  # not Linux: torch's own cpuinfo
            return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
                        or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return bool(cpu_flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'auto' → bf16 where `device` computes it natively, fp32 elsewhere (emulated bf16 is no faster than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def bf16_kernels(precision: str, device: str | torch.device) -> AbstractContextManager:
    """Where bf16 runs on a CPU without native bf16: `emulated_bf16()` (native bf16's numerics, at about fp32's
    speed instead of the reference kernels' 15-20x slowdown); anywhere else: nothing to do."""
    dev = torch.device(device)
    if precision == "bf16" and dev.type == "cpu" and not native_bf16(dev):
        return emulated_bf16()
    return nullcontext()


def autocast(precision: str, device: str | torch.device) -> AbstractContextManager:
    """The block's forward passes in `precision` (resolved: 'fp32' or 'bf16'): bf16 autocast, with
    `bf16_kernels` where the device lacks native bf16; nothing for fp32."""
    if precision != "bf16":
        return nullcontext()
    dev = torch.device(device)
    stack = ExitStack()
    stack.enter_context(bf16_kernels(precision, dev))
    stack.enter_context(torch.autocast(dev.type, dtype=torch.bfloat16))
    return stack


class emulated_bf16(TorchDispatchMode):
    """Inside the block, bf16 autocast computes what native bf16 hardware computes, at about fp32's speed.

    Native bf16 kernels (oneDNN on AVX512-BF16/AMX, cuDNN/cuBLAS) take bf16 operands, accumulate in fp32 and round
    the result once. Without them, CPU autocast falls back to reference kernels 15-20x slower than fp32, and its
    transposed convolution even rounds partial sums. Here the matrix kernels (convolutions and their backward, the
    mm family) receive their bf16 operands widened to fp32 — bf16 × bf16 products are exact in fp32 — run fp32
    kernels, and round the result to bf16; every other op runs untouched, in the dtype autocast chose. Wrap the
    backward pass too (it holds the convolutions' backward):

        with emulated_bf16(), torch.autocast("cpu", torch.bfloat16):
            loss = model(x).sum()
        ...
        with emulated_bf16():
            loss.backward()

    It lets a machine without bf16 show bf16's effect on results; it is never faster than fp32. Per thread.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        floats = [t.dtype for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if func in _MATRIX_KERNELS and floats and all(d == torch.bfloat16 for d in floats):
            args, kwargs = tree_map_only(torch.Tensor, _widen, (args, kwargs))
            return tree_map_only(torch.Tensor, _narrow, func(*args, **kwargs))
        return func(*args, **kwargs)


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype == torch.bfloat16 else t


def _narrow(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16) if t.dtype == torch.float32 else t
