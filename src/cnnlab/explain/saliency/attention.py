"""Transformer-native maps, read from the attention matrices: attention rollout (Abnar & Zuidema 2020) and
gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability"). The
matrices are those of timm's attention modules and of torch's `nn.MultiheadAttention` (torchvision's ViT); their
fused kernels compute none, so `attention_matrices` switches them off inside a `with` block and restores them."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import CnnlabError
from ...core.layout import prefix_tokens, token_grid
from .base import SaliencyMethod, register, upsampled


def _timm_attention(module: nn.Module) -> bool:
    return hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)


@contextmanager
def attention_matrices(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The attention matrices (B, heads, N, N) of every attention module, in the order a forward pass inside the
    block computes them (gradients flow through them). timm's modules run unfused (`fused_attn` off); each
    `nn.MultiheadAttention` is asked for its per-head weights. Everything is restored on exit."""
    store: list[torch.Tensor] = []
    handles, fused, wrapped = [], [], []
    for module in net.modules():
        if _timm_attention(module):
            fused.append((module, module.fused_attn))
            module.fused_attn = False
            handles.append(module.attn_drop.register_forward_hook(lambda m, args, out: store.append(out)))
        elif isinstance(module, nn.MultiheadAttention):
            module.forward = _explicit(module, store)  # an instance attribute: removed on exit
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


def _explicit(module: nn.MultiheadAttention, store: list):
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

    def check_model(self, backbone) -> None:
        if not any(_timm_attention(m) or isinstance(m, nn.MultiheadAttention) for m in backbone.net.modules()):
            raise CnnlabError(f"{self.name} reads a transformer's attention matrices; {backbone.name} has no "
                              "attention module (use gradcam)")

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
        prefix = prefix_tokens(backbone.net)
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
