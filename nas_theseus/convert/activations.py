"""The guide's activations over a whole split, computed once (the guide is frozen and the data fixed)."""

from __future__ import annotations

import torch

from ..guides import Guide
from ..utils.hashing import stable_hash
from ..utils.progress import progress_bar


class GuideActivations:
    """``acts[k]`` is A_k for every row of ``x`` (A_0 = input of part 1, A_K = output of the last part) and
    ``acts[-1]`` the guide's output; all on the CPU, float32. ``key`` identifies guide and data."""

    def __init__(self, acts: list[torch.Tensor], key: str):
        self.acts = acts
        self.key = key

    @classmethod
    @torch.no_grad()
    def compute(cls, guide: Guide, x: torch.Tensor, *, data_key: str, batch_size: int = 512,
                device: torch.device | str = "cpu", progress: bool = True) -> GuideActivations:
        chunks: list[list[torch.Tensor]] = []
        bar = progress_bar(total=len(x), desc="guide activations", unit="sample", enabled=progress)
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            chunks.append([a.float().cpu() for a in guide.activations(xb)])
            bar.update(len(xb))
        bar.close()
        acts = [torch.cat(col) for col in zip(*chunks)]
        return cls(acts, stable_hash({"guide": guide.identity, "data": data_key}))

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        return [a[idx].to(device, non_blocking=True) for a in self.acts]

    def __len__(self) -> int:
        return len(self.acts[0])
