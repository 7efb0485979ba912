"""A network's blocks, from the input to the output: what `--finetune last:N` counts and trains.

Found from the module tree alone, the same way for every family. A *weight layer* is a convolution, a linear or
embedding layer (a norm is not one); a *block* is a module holding at least two weight layers (a residual block, a
transformer block, a stage of them). The blocks are the block children of the outermost stacks — a Sequential or
ModuleList holding blocks: EfficientNet's stages `blocks.0..6`, a ViT's `blocks.0..11`, Hugging Face's
`encoder.layer.*`, a ResNet's `layerK.i`, a Swin's or ConvNeXt's stages —, else the children of the outermost module
with two or more block children (GoogLeNet's inception modules), else (VGG's features, a small digit CNN) every
weight layer. Every parameter outside the blocks and the head — a stem, a class token and position embeddings, a
final norm, a 1×1 head convolution — goes with the block next to it (the first block when it comes before them all,
else the block before it), so a lone norm or pooling layer is never a unit of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)


@dataclass
class Block:
    """A unit of fine-tuning: its module path, and every parameter it trains (its own and the glue beside it)."""

    name: str
    params: list[str] = field(default_factory=list)  # parameter names, as in `net.named_parameters()`
    glue: list[str] = field(default_factory=list)  # the modules outside any block whose parameters it takes
    # what goes to train mode with it: the block and its glue's leaf modules (a module that only owns tokens, such
    # as torchvision's `encoder` with its position embedding, would switch on the dropout of every frozen block)
    modules: list[str] = field(default_factory=list)


def _is_weight_layer(m: nn.Module) -> bool:
    if isinstance(m, _LAYERS):
        return True
    has_children = any(True for _ in m.children())
    return not has_children and any(p.dim() >= 2 for p in m.parameters(recurse=False))


def _weight_layers(m: nn.Module, skip: set[int]) -> int:
    return sum(1 for sub in m.modules() if id(sub) not in skip and _is_weight_layer(sub))


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _find_blocks(net: nn.Module, head: str | None) -> list[str]:
    """The block paths: the block children of the outermost stacks (a Sequential or ModuleList holding blocks), else
    of the outermost module with ≥ 2 block children, else every weight layer outside the head."""
    skip = {id(m) for m in net.get_submodule(head).modules()} if head else set()
    is_block = lambda m: _weight_layers(m, skip) >= 2  # noqa: E731

    def children(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(f"{prefix}.{n}" if prefix else n, c) for n, c in module.named_children() if id(c) not in skip]

    def stacks(prefix: str, module: nn.Module) -> list[str]:
        kids = children(prefix, module)
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and any(is_block(c) for _, c in kids):
            return [n for n, c in kids if is_block(c)]
        return [b for n, c in kids for b in stacks(n, c)]

    def layers_of(name: str, module: nn.Module) -> list[str]:  # a plain stack of single layers counts its layers
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and not any(is_block(c) for c in module.children()):
            return [n for n, c in children(name, module) if _weight_layers(c, skip)]
        return [name]

    def widest(prefix: str, module: nn.Module) -> list[str]:
        found = [(n, c) for n, c in children(prefix, module) if is_block(c)]
        if len(found) >= 2:
            return [b for n, c in found for b in layers_of(n, c)]
        return next((b for n, c in children(prefix, module) if (b := widest(n, c))), [])

    found = stacks("", net) or widest("", net)
    return found or [n for n, m in net.named_modules() if n and id(m) not in skip and _is_weight_layer(m)]


def blocks(net: nn.Module, head: str | None) -> list[Block]:
    """The blocks of `net` from the input to the output, the head (a module path) left out; each with the parameters
    it trains, glue included (see the module's docstring)."""
    names = _find_blocks(net, head)
    if not names:
        return []
    found = [Block(n, modules=[n]) for n in names]
    current = None
    for pname, _ in net.named_parameters():
        if head and _inside(pname, head):
            continue
        owner = next((b for b in found if _inside(pname, b.name)), None)
        if owner is not None:
            current = owner
            owner.params.append(pname)
            continue
        module = pname.rpartition(".")[0]
        target = current or found[0]
        target.params.append(pname)
        if module and module not in target.glue:  # the module that owns it (not the root's own tokens)
            target.glue.append(module)
            if not any(True for _ in net.get_submodule(module).children()):
                target.modules.append(module)
    return found
