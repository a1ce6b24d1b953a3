"""Fresh weights for a module of any origin (ours, timm's, transformers')."""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02  # GPT-2's and timm ViT's init for weights that have no reset_parameters


@torch.no_grad()
def reinitialize(module: nn.Module) -> None:
    """Re-draw every parameter of ``module`` (from torch's global RNG; seed it first).

    Submodules with ``reset_parameters`` (Linear, Conv, Embedding, norms, RNNs...) use it; this also resets
    BatchNorm running statistics. Every other parameter, such as a timm ViT's ``pos_embed`` and ``cls_token``
    or the weights of transformers' ``Conv1D`` in GPT-2 blocks, would otherwise keep its trained value:
    matrices and tensors get a normal(0, 0.02) draw truncated at ±2 std, 1-D ``bias`` vectors zeros, other
    vectors (scales) ones.
    """
    reset: set[int] = set()
    for m in module.modules():
        if callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
            reset |= {id(p) for p in m.parameters()}
    for name, p in module.named_parameters():
        if id(p) in reset:
            continue
        if p.dim() > 1:
            nn.init.trunc_normal_(p, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        elif name.rsplit(".", 1)[-1] == "bias":
            p.zero_()
        else:
            p.fill_(1.0)
