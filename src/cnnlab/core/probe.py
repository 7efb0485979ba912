"""One probe pass over a model: which module outputs are laid on the image (`core.layout`), where in the pass each
is made, and whether the class score's gradient reaches its grid — the same question for every family, answered by
the model itself rather than by a list of names. From it comes the default layer of a class activation map: the
deepest output laid on the image through which the class score's gradient flows (a transformer's last `norm1`, whose
patch tokens still feed attention; a CNN's last stage; never a class-attention block's patch tokens, which the head
does not read), and, when that layer is early in the network or the score ignores the image, the one line that says
so."""
from __future__ import annotations

from dataclasses import dataclass

import torch


from .hooks import eval_mode
from .layout import Layout, inside_attention, layout_of

EARLY = 0.25  # a default layer made in the first quarter of the pass is said: its map shows early features
PROBE_SEED = 0


@dataclass(frozen=True)
class Probed:
    name: str
    layout: Layout
    position: float  # where in the pass its output was made: the share of the modules that ran before it
    gradient: bool  # the class score's gradient is not 0 on its grid


@dataclass(frozen=True)
class Probe:
    layers: list[Probed]  # in the order the pass made them (a module run twice: its last output)
    sensitive: bool  # the class score's gradient with respect to the image is not 0 (False: a zero or constant head)


def probe_image(backbone) -> torch.Tensor:
    """A seeded noise image at the input size (the same probe on every call)."""
    size = backbone.preprocess.input_size
    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.rand(1, backbone.in_channels, size, size, generator=g).to(backbone.device)


def probe(backbone) -> Probe:
    """Every module output of one pass of the probe image, with its layout and whether the gradient of the predicted
    class's score flows through its grid (one backward pass; the parameters' gradients are not touched)."""
    x = probe_image(backbone).requires_grad_(True)
    image = tuple(x.shape[-2:])
    made: dict[str, tuple[torch.Tensor, Layout, int]] = {}
    count = [0]

    def hook(name):
        def record(module, args, out):
            count[0] += 1
            layout = layout_of(out, image, backbone.net, module, batch=1)
            if layout is not None:
                made.pop(name, None)
                made[name] = (out, layout, count[0])
        return record

    modules = [(n, m) for n, m in backbone.net.named_modules() if n and not inside_attention(n, backbone.net)]
    handles = [m.register_forward_hook(hook(n)) for n, m in modules]
    try:
        with torch.enable_grad(), eval_mode(backbone):
            logits = backbone(x)
    finally:
        for h in handles:
            h.remove()
    score = logits[0, logits[0].argmax()]
    names = [n for n, (t, _, _) in made.items() if t.requires_grad]
    try:
        grads = torch.autograd.grad(score, [x] + [made[n][0] for n in names], allow_unused=True)
    except RuntimeError:  # a graph that cannot be differentiated through (in-place updates): no gradient said
        grads = [None] * (len(names) + 1)
    flows = {n: g is not None and bool(made[n][1].to_nchw(g.detach()).abs().sum() > 0)
             for n, g in zip(names, grads[1:])}
    total = max(count[0], 1)
    layers = [Probed(n, layout, k / total, flows.get(n, False)) for n, (_, layout, k) in made.items()]
    return Probe(layers, grads[0] is not None and bool(grads[0].abs().sum() > 0))


def default_layer(backbone) -> tuple[str | None, str | None, bool]:
    """(the default class-activation layer, a one-line warning or None, whether the answer is settled). The deepest
    output laid on the image with a grid of more than one cell through which the class score's gradient flows; when
    the score does not depend on the image at all, the deepest laid on the image, unsettled (a head trained later
    changes the answer), and the warning says why its maps will be flat."""
    found = probe(backbone)
    grids = [p for p in found.layers if p.layout.grid[0] * p.layout.grid[1] > 1]
    if not grids:
        return None, None, True
    if not found.sensitive:
        return grids[-1].name, (f"{backbone.name}: its class scores do not depend on the input image (their "
                                "gradient with respect to it is 0: a zero-initialized or constant head?), so every "
                                "saliency map is flat"), False
    flowing = [p for p in grids if p.gradient]
    chosen = flowing[-1] if flowing else grids[-1]
    if chosen.position < EARLY:
        return chosen.name, (f"{backbone.name}: the default Grad-CAM layer {chosen.name} is made in the first "
                             f"{chosen.position:.0%} of the network (no later output is laid on the image with the "
                             "class score's gradient flowing through it): its map shows early features; pass "
                             "--layer to choose another"), True
    return chosen.name, None, True


def score_ignores_input(backbone, x: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether the target scores of `x` have a zero gradient with respect to the images (a zero or constant head):
    the true cause of a flat map, whatever the method."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(backbone):
        score = backbone(x).gather(1, targets.view(-1, 1)).sum()
    if not score.requires_grad:
        return True
    (g,) = torch.autograd.grad(score, x, allow_unused=True)
    return g is None or bool(g.abs().sum() == 0)


def unmeasured_norms(net: torch.nn.Module) -> list[str]:
    """The BatchNorm layers whose running statistics are still their initial ones (mean 0, variance 1, no batch
    counted): a network that never saw data. In eval mode they do not center its activations, so every channel keeps
    its offset and late maps come out nearly constant — the true cause of a flat map there, not the layer."""
    out = []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats \
                and m.running_mean is not None and not m.running_mean.any() and bool((m.running_var == 1).all()):
            out.append(name)
    return out


def default_cam_layers(backbone) -> list[str]:
    """Where a class activation map reads when not told — the one home of that answer: the model's registry entry
    (`cam_layers`, measured: Lite's head+block6, VGG16's conv5_3), else the one rule above (`default_layer`, found
    once per model by `Backbone.last_spatial_layer`)."""
    return list(backbone.cam_layers) if backbone.cam_layers else [backbone.last_spatial_layer()]
