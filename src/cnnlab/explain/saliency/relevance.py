"""Relevance propagation: the class score redistributed layer by layer down to the pixels, conserving its sum.

`lrp` — Layer-wise Relevance Propagation for CNNs (Bach et al. 2015; Montavon et al. 2019) through zennit: its
composites assign a rule per layer type (ε, γ, z⁺, flat, z^B), its canonizer folds each BatchNorm into the
convolution that feeds it. Which convolution feeds which BatchNorm is read off one probe pass (the same for every
family, not a list of names). A model with layers no rule covers (LayerNorm, attention) is refused in one line.

`attnlrp` — AttnLRP for transformers (Achtibat et al., ICML 2024) with lxt's rules, applied in the Gradient×Input
framework inside a `with` block and removed after: LayerNorm's identity rule (its variance held constant), the
identity rule on element-wise non-linearities (GELU, SiLU, …), and in the attention either CP-LRP's constant
attention (`--attnlrp-variant cp`, the default: no relevance through the softmax, Ali et al. 2022) or AttnLRP's
uniform rule on its two matrix products (`attnlrp`: the query and key gradients divided by 4, the value's by 2, the
softmax's own Gradient×Input). Works on timm's, torchvision's and Hugging Face's ViT-like models; its relevance is
at the pixels. lxt's `efficient` package does not import with transformers 5 (a removed helper), so its rules file
is loaded on its own (`_lxt_rules`; docs/architecture.md says why).
"""
from __future__ import annotations

import importlib.util
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import option
from ...core.errors import CnnlabError
from .base import SaliencyMethod, register

COMPOSITES = ("epsilon-plus-flat", "epsilon-gamma-box", "epsilon-plus", "epsilon-alpha2-beta1-flat")
VARIANTS = ("cp", "attnlrp")
_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.ELU, nn.Softplus, nn.Tanh, nn.Sigmoid)
_NORMS_WITHOUT_RULE = (nn.LayerNorm, nn.GroupNorm, nn.modules.normalization.RMSNorm, nn.MultiheadAttention)


def _rule_less(net: nn.Module) -> tuple[str, str] | None:
    """The first module LRP's composites have no rule for (a norm but BatchNorm, an attention): (path, type)."""
    return next(((n, type(m).__name__) for n, m in net.named_modules()
                 if isinstance(m, _NORMS_WITHOUT_RULE) or "attention" in type(m).__name__.lower()), None)


def _has_attention(net: nn.Module) -> bool:
    """Whether the network has an attention module lxt's rules (and cnnlab's attention methods) know."""
    from .attention import hf_attention, timm_attention

    return any(timm_attention(m) or hf_attention(m) or isinstance(m, nn.MultiheadAttention) for m in net.modules())


def relevance_map(relevance: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) relevance at the pixels → (B,H,W) ≥ 0: summed over channels, its positive part (the evidence for
    the class)."""
    return relevance.sum(1).clamp(min=0)


@dataclass
class RelevanceMethod(SaliencyMethod):
    """A method whose map is the relevance of the network's input values (`relevance`), summed over channels."""

    def _maps(self, backbone, x, targets):
        return relevance_map(self.relevance(backbone, x, targets))

    def relevance(self, backbone, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ LRP (zennit)
_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backbone → its pairs (one probe pass per model)


def batchnorm_pairs(backbone) -> list[tuple[tuple[str], str]]:
    """(convolution or linear layer, the BatchNorm its output feeds) for every BatchNorm that reads a layer's output
    directly, found on one probe pass (once per model): zennit's NamedMergeBatchNorm folds each pair."""
    if backbone in _PAIRS:
        return _PAIRS[backbone]
    from ...core.probe import probe_image

    made: dict[int, str] = {}
    pairs = []
    handles = []
    for name, m in backbone.net.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(m.register_forward_hook(lambda mod, a, out, n=name: made.__setitem__(id(out), n)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(
                lambda mod, args, n=name: pairs.append(((made[id(args[0])],), n)) if id(args[0]) in made else None))
    try:
        with torch.no_grad():
            backbone(probe_image(backbone))
    finally:
        for h in handles:
            h.remove()
    _PAIRS[backbone] = list(dict.fromkeys(pairs))
    return _PAIRS[backbone]


def _composite(name: str, backbone, epsilon: float, gamma: float, canonizers: list):
    from zennit import composites

    if name == "epsilon-plus-flat":
        return composites.EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    if name == "epsilon-plus":
        return composites.EpsilonPlus(epsilon=epsilon, canonizers=canonizers)
    if name == "epsilon-alpha2-beta1-flat":
        return composites.EpsilonAlpha2Beta1Flat(epsilon=epsilon, canonizers=canonizers)
    # the z^B rule on the first layer needs the bounds of its input: the pixel range [0,1], normalized
    shape = (1, backbone.in_channels, 1, 1)
    low = ((0 - backbone.mean) / backbone.std).reshape(shape)
    high = ((1 - backbone.mean) / backbone.std).reshape(shape)
    size = backbone.preprocess.input_size
    return composites.EpsilonGammaBox(low=low.expand(1, -1, size, size), high=high.expand(1, -1, size, size),
                                      epsilon=epsilon, gamma=gamma, canonizers=canonizers)


@register
@dataclass
class Lrp(RelevanceMethod):
    name = "lrp"
    help = ("Layer-wise Relevance Propagation (Bach et al. 2015) through zennit, for CNNs: a rule per layer type "
            "(--lrp-composite; BatchNorm folded into the convolution before it), the class score redistributed "
            "down to the pixels; the positive part of its sum over channels")
    cnns_only: ClassVar[bool] = True
    lrp_composite: str = option("epsilon-plus-flat", choices=COMPOSITES,
                                help="lrp: zennit's composite: ε on dense layers, z⁺ on convolutions, flat on the "
                                     "first (epsilon-plus-flat); γ instead of z⁺ and z^B at the pixels "
                                     "(epsilon-gamma-box); …")
    # bounded: beyond them ε absorbs every relevance and γ overflows (γ → ∞ is the z⁺ rule, a composite of its own)
    lrp_epsilon: float = option(1e-6, low=0, low_open=True, high=100.0, help="lrp: the ε rule's stabilizer")
    lrp_gamma: float = option(0.25, low=0, high=100.0, help="lrp: the γ rule's weight of positive contributions "
                                                            "(epsilon-gamma-box)")

    def check_model(self, backbone) -> None:
        rule_less = _rule_less(backbone.net)
        if rule_less:
            instead = "attnlrp (it has attention)" if _has_attention(backbone.net) else "gradcam"
            raise CnnlabError(f"lrp has rules for convolutions, linear layers, BatchNorm and pooling; "
                              f"{backbone.name} has a {rule_less[1]} ({rule_less[0]}) it has no rule for: use "
                              f"{instead}")
        try:
            import zennit  # noqa: F401
        except ImportError:
            raise CnnlabError("lrp needs zennit: pip install zennit") from None

    def relevance(self, backbone, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W): the relevance of each input value of the network (after the Backbone's normalization)."""
        from zennit.attribution import Gradient
        from zennit.canonizers import NamedMergeBatchNorm

        self.check_model(backbone)
        pairs = [(tuple(f"net.{c}" for c in convs), f"net.{bn}") for convs, bn in batchnorm_pairs(backbone)]
        canonizers = [NamedMergeBatchNorm(pairs)] if pairs else []  # names under _Net, the root zennit sees
        composite = _composite(self.lrp_composite, backbone, self.lrp_epsilon, self.lrp_gamma, canonizers)
        xn = backbone.normalize(x.detach()).requires_grad_(True)  # the relevance of the network's own input
        onehot = torch.zeros(len(x), backbone.num_classes, device=x.device)
        onehot[torch.arange(len(x)), targets] = 1
        with Gradient(model=_Net(backbone), composite=composite) as attributor:
            _, relevance = attributor(xn, lambda out: onehot * out)  # the class score itself is redistributed
        return relevance


class _Net(nn.Module):
    """The network without the Backbone's normalization (applied before: zennit's first-layer rules see the
    network's input), its logits out."""

    def __init__(self, backbone):
        super().__init__()
        self.net = backbone.net

    def forward(self, x):
        from ...core.backbones import logits_of

        return logits_of(self.net(x))


# ------------------------------------------------------------------------------------------- AttnLRP (lxt)
def _lxt_rules():
    """lxt's rules (`lxt.efficient.rules`): imported where lxt's package imports, else loaded from its file, which
    needs torch alone (the package's __init__ imports transformers helpers removed in transformers 5)."""
    try:
        from lxt.efficient import rules
        return rules
    except ImportError:
        pass
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        raise CnnlabError("attnlrp needs lxt (LRP eXplains Transformers): pip install lxt")
    from pathlib import Path

    path = Path(list(spec.submodule_search_locations)[0]) / "efficient" / "rules.py"
    loader = importlib.util.spec_from_file_location("cnnlab_lxt_rules", path)
    rules = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(rules)
    return rules


def _layer_norm(rules):
    def hook(module, args, out):  # the identity rule: the variance held constant (lxt's layer_norm_forward)
        x = args[0]
        dims = tuple(range(-len(module.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        std = (((x - mean) ** 2).mean(dim=dims, keepdim=True) + module.eps).sqrt()
        y = (x - mean) / rules.stop_gradient(std)
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
        return y
    return hook


def _activation(rules):
    def hook(module, args, out):  # the identity rule on an element-wise non-linearity (lxt's non_linear_forward)
        return rules.identity_rule_implicit(lambda t: type(module).forward(module, t), args[0])
    return hook


def qkv_rule(rules, variant: str):
    """What the attention rule does to a query, key or value tensor (`part`: "q", "k" or "v"): CP-LRP stops the
    queries' and keys' gradient (the attention weights act as constants); AttnLRP divides them by 4 and the values'
    by 2 (the uniform rule on q·kᵀ and on attention·v, as lxt's wrap_attention_forward)."""
    def rule(t: torch.Tensor, part: str) -> torch.Tensor:
        if part == "v":
            return t if variant == "cp" else rules.divide_gradient(t, 2)
        return rules.stop_gradient(t) if variant == "cp" else rules.divide_gradient(t, 4)
    return rule


def _projection(rules, variant: str, parts: str):
    """A hook on a layer making queries, keys or values (`parts`: which of q, k, v its output holds, in order)."""
    rule = qkv_rule(rules, variant)

    def hook(module, args, out):
        if len(parts) == 1:
            return rule(out, parts)
        return torch.cat([rule(c, p) for c, p in zip(out.chunk(len(parts), dim=-1), parts)], dim=-1)
    return hook


_QKV_NAMES = {"qkv": "qkv", "q_proj": "q", "query": "q", "q": "q", "k_proj": "k", "key": "k", "k": "k",
              "v_proj": "v", "value": "v", "v": "v"}


def _gamma(gamma: float, stabilizer: float = 1e-6):
    """zennit's generalized γ rule (`zennit.rules.Gamma`, Andéol et al. 2021: signed inputs allowed) on a linear or
    convolutional layer, in the Gradient×Input framework as lxt uses it: the output keeps its value; its gradient is
    redistributed over the positive and negative parts of the input by the weights with γ added to those of the
    output's sign (z_γ · (z / z_γ) held constant, per output sign)."""
    def layer(module, x, weight, bias):
        return F.linear(x, weight, bias) if isinstance(module, nn.Linear) else module._conv_forward(x, weight, bias)

    def stable(z):
        return z + stabilizer * torch.where(z >= 0, 1.0, -1.0)

    def hook(module, args, out):
        x, w, b = args[0], module.weight, module.bias
        up, down = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
        b_up = None if b is None else b + gamma * b.clamp(min=0)
        b_down = None if b is None else b + gamma * b.clamp(max=0)
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        z_pos = stable(layer(module, pos, up, b_up) + layer(module, neg, down, None))  # for outputs > 0
        z_neg = stable(layer(module, pos, down, b_down) + layer(module, neg, up, None))  # for outputs < 0
        return (out > 0) * z_pos * (out / z_pos).detach() + (out < 0) * z_neg * (out / z_neg).detach()
    return hook


@contextmanager
def attnlrp_rules(net: nn.Module, variant: str = "cp", gamma: float = 0.0) -> Iterator[None]:
    """lxt's rules on `net`'s modules for the block (forward hooks; timm's fused attention off; torch's
    MultiheadAttention and transformers' attention computed in the open), and with `gamma` > 0 the γ rule on every
    linear and convolutional layer but the head: Gradient×Input of the class score is then its AttnLRP relevance.
    Everything is removed on exit."""
    from ...core.models import head_path
    from .attention import hf_attention, timm_attention, attention_matrices

    rules = _lxt_rules()
    handles = []
    if gamma:  # registered first: the attention's rules below act on the outputs γ keeps
        head = head_path(net)
        handles += [m.register_forward_hook(_gamma(gamma)) for n, m in net.named_modules()
                    if isinstance(m, (nn.Linear, nn.Conv2d)) and n != head]
    with ExitStack() as stack:
        stack.enter_context(attention_matrices(net, qkv_rule=qkv_rule(rules, variant)))  # unfused, in the open
        for name, m in net.named_modules():
            if isinstance(m, nn.LayerNorm):
                handles.append(m.register_forward_hook(_layer_norm(rules)))
            elif isinstance(m, _ACTIVATIONS) or type(m).__name__.endswith("GELUActivation"):
                handles.append(m.register_forward_hook(_activation(rules)))
            elif timm_attention(m) or hf_attention(m):
                for child, sub in m.named_children():
                    if isinstance(sub, nn.Linear) and child in _QKV_NAMES:
                        handles.append(sub.register_forward_hook(_projection(rules, variant, _QKV_NAMES[child])))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@register
@dataclass
class AttnLrp(RelevanceMethod):
    name = "attnlrp"
    help = ("AttnLRP (Achtibat et al. 2024) with lxt's rules, transformers only: LayerNorm and GELU by the "
            "identity rule, attention as constants (CP-LRP, the default) or by the uniform rule "
            "(--attnlrp-variant attnlrp); Gradient×Input at the pixels, its positive part summed over channels")
    transformers_only: ClassVar[bool] = True
    attnlrp_variant: str = option("cp", choices=VARIANTS, help="attnlrp: the rule inside attention: cp (CP-LRP: "
                                                               "the attention weights as constants) or attnlrp "
                                                               "(the uniform rule on its matrix products)")
    attnlrp_gamma: float = option(0.0, low=0, high=100.0,
                                  help="attnlrp: γ of zennit's generalized γ rule on the linear and convolutional "
                                       "layers but the head (0: off, their plain gradient)")

    def check_model(self, backbone) -> None:
        if not _has_attention(backbone.net):
            instead = "gradcam" if _rule_less(backbone.net) else "lrp (a CNN it has rules for)"
            raise CnnlabError(f"attnlrp applies lxt's rules to a transformer's attention; {backbone.name} has no "
                              "attention module it knows (timm's, torch's MultiheadAttention, transformers'): use "
                              f"{instead}")
        _lxt_rules()

    def relevance(self, backbone, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W): Gradient×Input of the class score under lxt's rules, at the network's input."""
        from ...core.backbones import logits_of

        self.check_model(backbone)
        xn = backbone.normalize(x.detach()).requires_grad_(True)
        with attnlrp_rules(backbone.net, self.attnlrp_variant, self.attnlrp_gamma):
            score = logits_of(backbone.net(xn)).gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, xn)
        return xn.detach() * grad


