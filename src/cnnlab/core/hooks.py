"""Context managers around a module: capture activations, set eval mode, freeze parameters — all undone on exit."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class CutPoint:
    """Where a feature is read: the output (or the input) of a named submodule."""

    module: str
    kind: str = "output"  # "input" reads what enters the module, e.g. pre-logits = input of the classifier
    read: str = "all"  # of a token sequence: "cls" its first (class) token, "patches" the mean of its patch tokens


class _Enough(Exception):
    """Raised from a hook once every requested activation is captured, to skip the rest of the network."""


@contextmanager
def capture(model: nn.Module, points: dict[str, CutPoint], stop_early: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the activations named in `points` during forward passes inside the block.

    With `stop_early`, the forward pass stops as soon as all of them are recorded (use `run_until_captured`).
    """
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []

    def _record(name: str, value: torch.Tensor) -> None:
        store[name] = value
        if stop_early and len(store) == len(points):
            raise _Enough

    for name, point in points.items():
        if point.module not in modules:
            raise KeyError(point.module)
        module = modules[point.module]
        if point.kind == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, n=name: _record(n, args[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, n=name: _record(n, out)))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def run_until_captured(model: nn.Module, x: torch.Tensor) -> None:
    """Forward `x`; a capture with stop_early ends the pass once it has everything."""
    try:
        model(x)
    except _Enough:
        pass


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.train(training)


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off requires_grad on every parameter (gradients flow to inputs only); restore afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class Passes:
    """Image-passes through a module: `forward` (images in every forward call) and `backward` (images whose gradient
    flowed back through its output). A cost that does not depend on the machine or its load."""

    forward: int = 0
    backward: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward


@contextmanager
def count_passes(model: nn.Module) -> Iterator[Passes]:
    """Count the image-passes through `model` inside the block (a stopped-early pass counts as one)."""
    passes = Passes()

    def backward(grad: torch.Tensor) -> None:
        passes.backward += grad.shape[0] if grad.dim() else 1

    def started(module, args) -> None:  # counted as it starts: a pass stopped early by a capture counts too
        passes.forward += args[0].shape[0] if args and isinstance(args[0], torch.Tensor) and args[0].dim() else 1

    def finished(module, args, out) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(backward)

    handles = [model.register_forward_pre_hook(started), model.register_forward_hook(finished)]
    try:
        yield passes
    finally:
        for h in handles:
            h.remove()
