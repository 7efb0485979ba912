"""Transformer-native maps, read from the attention matrices: attention rollout (Abnar & Zuidema 2020) and
gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability"). The
matrices are those of timm's attention modules, of torch's `nn.MultiheadAttention` (torchvision's ViT) and of
Hugging Face's attention modules; their fused kernels compute none, so `attention_matrices` switches them off (timm's
`fused_attn`, transformers' attention implementation set to "eager") inside a `with` block and restores them.
Both methods read the class token's row: a model without a class token that its head reads (a Swin, a ViT that
averages its patch tokens, registers without a class token) is refused before any forward pass."""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import CnnlabError
from ...core.hf import is_hf_model
from ...core.layout import MAX_PREFIX, prefix_tokens, token_grid
from .base import SaliencyMethod, register, upsampled


def timm_attention(module: nn.Module) -> bool:
    return hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)


def _hf_weights(store: list):
    """A forward hook keeping the attention weights a transformers attention module returns beside its output."""
    def keep(module, args, out):
        if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].ndim == 4 \
                and out[1].shape[-1] == out[1].shape[-2] and not any(out[1] is s for s in store):
            store.append(out[1])
    return keep


@contextmanager
def attention_matrices(net: nn.Module, qkv_rule=None) -> Iterator[list[torch.Tensor]]:
    """The attention matrices (B, heads, N, N) of every attention module, in the order a forward pass inside the
    block computes them (gradients flow through them). timm's modules run unfused (`fused_attn` off); each
    `nn.MultiheadAttention` is asked for its per-head weights; a transformers model runs its eager attention, whose
    modules return their weights. `qkv_rule(t, "q"|"k"|"v")`, where given, is applied to the queries, keys and values
    that torch's MultiheadAttention computes in the open (relevance rules: `relevance.py`). Everything is restored on
    exit."""
    store: list[torch.Tensor] = []
    handles, fused, wrapped = [], [], []
    implementation = None
    if is_hf_model(net) and hasattr(net, "set_attn_implementation"):
        implementation = net.config._attn_implementation
        net.set_attn_implementation("eager")
        handles += [m.register_forward_hook(_hf_weights(store)) for m in net.modules() if hf_attention(m)]
    for module in net.modules():
        if timm_attention(module):
            fused.append((module, module.fused_attn))
            module.fused_attn = False
            handles.append(module.attn_drop.register_forward_hook(lambda m, args, out: store.append(out)))
        elif isinstance(module, nn.MultiheadAttention):
            module.forward = _explicit(module, store, qkv_rule)  # an instance attribute: removed on exit
            wrapped.append(module)
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
        for module, flag in fused:
            module.fused_attn = flag
        for module in wrapped:
            del module.forward
        if implementation is not None:
            net.set_attn_implementation(implementation)


def hf_attention(module: nn.Module) -> bool:
    """A transformers attention module: it reads the attention implementation from its config."""
    return type(module).__name__.endswith("Attention") and hasattr(getattr(module, "config", None),
                                                                    "_attn_implementation")


def class_token(net: nn.Module) -> str | None:
    """Why `net` has no class token that its head reads (None when it has one): what rollout and Chefer need,
    decided from the model's structure before any forward pass."""
    own = [n for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] in ("cls_token", "class_token")]
    if not own:
        return "it has no class token"
    pool = getattr(net, "global_pool", "token")  # timm's ViTs: "token" reads the class token
    if isinstance(pool, str) and pool not in ("token", ""):
        return f"it pools its patch tokens ({pool}) instead of reading its class token"
    if getattr(getattr(net, "config", None), "use_mean_pooling", False):  # BEiT-like transformers models
        return "it averages its patch tokens instead of reading its class token"
    return None


def _explicit(module: nn.MultiheadAttention, store: list, qkv_rule=None):
    """`module`'s forward with its attention matrix computed in the open (softmax(QKᵀ/√d), kept in the graph) for
    batch-first self-attention without masks, as torchvision's ViT calls it; other calls get torch's own weights."""
    forward = module.forward

    def explicit(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                 average_attn_weights=True, is_causal=False):
        plain = (module.batch_first and query is key is value and key_padding_mask is None and attn_mask is None
                 and not is_causal and module._qkv_same_embed_dim and module.bias_k is None)
        if not plain:
            out, weights = forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=True,
                                   attn_mask=attn_mask, average_attn_weights=False, is_causal=is_causal)
            store.append(weights)
            return out, weights
        b, n, e = query.shape
        heads = module.num_heads
        q, k, v = (t.reshape(b, n, heads, e // heads).transpose(1, 2)
                   for t in F.linear(query, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1))
        if qkv_rule is not None:
            q, k, v = qkv_rule(q, "q"), qkv_rule(k, "k"), qkv_rule(v, "v")
        weights = (q @ k.transpose(-2, -1) * (e // heads) ** -0.5).softmax(dim=-1)
        store.append(weights)
        out = module.out_proj((weights @ v).transpose(1, 2).reshape(b, n, e))
        return out, weights
    return explicit


@dataclass
class AttentionMethod(SaliencyMethod):
    """A map of the class token's attention to the patches, from every block's attention matrices."""

    needs_gradients = False
    transformers_only = True
    _checked: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # models whose attention a probe pass has checked

    def check_model(self, backbone) -> None:
        net = backbone.net
        if not any(timm_attention(m) or isinstance(m, nn.MultiheadAttention) or hf_attention(m)
                   for m in net.modules()):
            raise CnnlabError(f"{self.name} reads a transformer's attention matrices; {backbone.name} has no "
                              "attention module (use gradcam)")
        missing = class_token(net)
        if missing:
            raise CnnlabError(f"{self.name} reads the class token's attention over the patches; {backbone.name} "
                              f"cannot give it: {missing} (use gradcam)")
        if backbone not in self._checked:  # one probe pass, before any image: attention over tokens, globally
            from ...core.probe import probe_image

            x = probe_image(backbone)
            with torch.no_grad(), attention_matrices(net) as attns:
                backbone(x)
            self._check(backbone, x, attns)
            self._checked.add(backbone)

    def flat_cause(self, backbone, x, targets) -> str:
        return ("the class token's attention is spread near evenly over the patches in every block (untrained or "
                "random weights attend this way)")

    def _maps(self, backbone, x, targets):
        self.check_model(backbone)
        with attention_matrices(backbone.net) as attns:
            if self.needs_gradients:
                score = backbone(x).gather(1, targets.view(-1, 1)).sum()
            else:
                with torch.no_grad():
                    backbone(x)
        prefix, grid = self._check(backbone, x, attns)
        grads = torch.autograd.grad(score, attns) if self.needs_gradients else [None] * len(attns)
        relevance = self._relevance([a.detach() for a in attns], [g if g is None else g.detach() for g in grads])
        row = relevance[:, 0, prefix:]  # the (first) class token's row, over the patch tokens
        return upsampled(row.reshape(len(x), *grid), x.shape[-2:]).clamp(min=0)

    def _check(self, backbone, x, attns) -> tuple[int, tuple[int, int]]:
        if not attns:
            raise CnnlabError(f"{self.name} reads a transformer's attention matrices; {backbone.name} has no "
                              "attention module (use gradcam)")
        n = attns[0].shape[-1]
        # the tokens before the patches: as the model declares them, else the fewest (≥ 1: the class token) that
        # leave a patch grid (transformers' ViTs declare none)
        prefix = next((p for p in dict.fromkeys([prefix_tokens(backbone.net), *range(1, MAX_PREFIX + 1)])
                       if p and n > p and token_grid(n - p, tuple(x.shape[-2:]))), 0)
        grid = token_grid(n - prefix, tuple(x.shape[-2:])) if prefix else None
        if grid is None or any(a.shape[0] != len(x) or a.shape[-1] != n for a in attns):
            raise CnnlabError(f"{self.name} needs global attention from a class token over the patches (ViT, DeiT, "
                              f"EVA); {backbone.name} attends otherwise (windows, stages): use gradcam")
        return prefix, grid

    def _relevance(self, attns: list[torch.Tensor], grads: list) -> torch.Tensor:
        raise NotImplementedError


@register
@dataclass
class Rollout(AttentionMethod):
    name = "rollout"
    help = ("attention rollout (Abnar & Zuidema 2020), transformers only: every block's attention averaged over "
            "heads, with the residual (identity) added, multiplied from the first block to the last; the class "
            "token's row over the patches. Class-agnostic: the same map for every class")

    def _relevance(self, attns, grads):
        eye = torch.eye(attns[0].shape[-1], device=attns[0].device)
        rollout = eye.expand(len(attns[0]), -1, -1)
        for a in attns:
            a = 0.5 * a.mean(dim=1) + 0.5 * eye
            rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
        return rollout


@register
@dataclass
class Chefer(AttentionMethod):
    name = "chefer"
    help = ("gradient-weighted attention relevance (Chefer et al. 2021, 'Generic Attention-model Explainability'), "
            "transformers only: each block's attention times its gradient for the class, positive part averaged "
            "over heads, accumulated from the first block (R ← R + Ā·R); the class token's row over the patches")
    needs_gradients = True

    def _relevance(self, attns, grads):
        n = attns[0].shape[-1]
        relevance = torch.eye(n, device=attns[0].device).expand(len(attns[0]), -1, -1)
        for a, g in zip(attns, grads):
            relevance = relevance + (g * a).clamp(min=0).mean(dim=1) @ relevance
        return relevance
