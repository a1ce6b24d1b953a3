"""Bridges: closed-form fits recover linear maps; the stitch passes its fit through in train and eval mode."""

import pytest
import torch

from nas_theseus.errors import UserError
from nas_theseus.targets import LowRankBridge, StitchBridge, make_bridge, ridge_solve


def _linear_data(n=600, rank=None):
    torch.manual_seed(0)
    x = torch.randn(n, 8, 10, dtype=torch.float64)
    m = torch.randn(80, 60, dtype=torch.float64)
    if rank is not None:
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        m = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    y = (x.flatten(1) @ m + 2.0).reshape(n, 6, 10)
    return x.float(), y.float()


def test_ridge_solve_primal_and_dual_agree():
    torch.manual_seed(0)
    x, w = torch.randn(50, 30, dtype=torch.float64), torch.randn(30, 4, dtype=torch.float64)
    y = x @ w
    w1, b1 = ridge_solve(x, y, 1e-6)
    assert torch.allclose(x @ w1 + b1, y, atol=1e-3)
    xw = torch.randn(20, 30, dtype=torch.float64)  # more features than rows: dual form
    w2, b2 = ridge_solve(xw, xw @ w, 1e-6)
    assert torch.allclose(xw @ w2 + b2, xw @ w, atol=1e-3)


def test_lowrank_bridge_fit_full_and_reduced_rank():
    x, y = _linear_data(rank=5)
    full = LowRankBridge((8, 10), (6, 10))
    full.fit(x, y, ridge=1e-8)
    assert (full(x) - y).abs().max() < 1e-2 * y.abs().max()
    low = LowRankBridge((8, 10), (6, 10), rank=5)
    assert low.rank == 5 and sum(p.numel() for p in low.parameters()) < sum(p.numel() for p in full.parameters())
    low.fit(x, y, ridge=1e-8)
    assert (low(x) - y).abs().max() < 1e-2 * y.abs().max()
    too_low = LowRankBridge((8, 10), (6, 10), rank=2)
    too_low.fit(x, y, ridge=1e-8)
    assert (too_low(x) - y).pow(2).mean() > (low(x) - y).pow(2).mean()


@pytest.mark.parametrize("out_shape", [(6, 10), (60,)])
def test_stitch_bridge_fit_in_train_and_eval_mode(out_shape):
    x, y = _linear_data()
    # a per-position map (what a 1x1 conv can express) when spatial sizes match
    torch.manual_seed(1)
    y = torch.einsum("nct,cd->ndt", x, torch.randn(8, 6)) + 1.0
    target = y if out_shape == (6, 10) else y.flatten(1)
    stitch = make_bridge("stitch", (8, 10), out_shape)
    assert isinstance(stitch, StitchBridge) and stitch.conv == (out_shape == (6, 10))
    stitch.fit(x, target, ridge=1e-8)
    for mode in (False, True):
        stitch.train(mode)
        with torch.no_grad():
            err = (stitch(x) - target).abs().max()
        assert err < 1e-2 * target.abs().max(), (mode, err)


def test_make_bridge_errors():
    with pytest.raises(UserError, match="unknown bridge 'stich'.*did you mean 'stitch'"):
        make_bridge("stich", (4,), (4,))
    with pytest.raises(UserError, match="no bridge can join"):
        make_bridge("lowrank", (), (4,))
