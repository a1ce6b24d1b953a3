"""Similarity measures against straightforward float64 references, and their invariances."""

import numpy as np
import pytest
import torch

from nas_theseus.align import dmnn, linear_cka, make_alignment, mutual_knn, unbiased_linear_cka


def _ref_cka(x, y):
    x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(0)
    y = y.reshape(len(y), -1) - y.reshape(len(y), -1).mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _ref_hsic1(k, l):
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l @ one)) / (n * (n - 3))


def _ref_unbiased(x, y):
    k, l = x @ x.T, y @ y.T
    return _ref_hsic1(k, l) / np.sqrt(_ref_hsic1(k, k) * _ref_hsic1(l, l))


def _ref_dmnn(z, a, k, tau):
    def cos(m):
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        return m @ m.T

    sa, sz = cos(a), cos(z)
    n = len(z)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        nbrs = sorted(others, key=lambda j: -sa[i, j])[:k]
        w = np.exp(np.array([sz[i, j] for j in others]) / tau)
        p = dict(zip(others, w / w.sum()))
        total += sum(p[j] for j in nbrs)
    return total / n


@pytest.fixture
def xy():
    g = np.random.default_rng(0)
    x = g.normal(size=(64, 10))
    y = np.tanh(x @ g.normal(size=(10, 7))) + 0.3 * g.normal(size=(64, 7))
    return x, y


def test_cka_matches_reference(xy):
    x, y = xy
    got = linear_cka(torch.tensor(x), torch.tensor(y)).item()
    assert got == pytest.approx(_ref_cka(x, y), rel=1e-10)


def test_cka_flattens_any_shape():
    x = torch.randn(32, 3, 5, dtype=torch.float64)
    y = torch.randn(32, 2, 2, 2, dtype=torch.float64)
    assert linear_cka(x, y).item() == pytest.approx(_ref_cka(x.numpy(), y.numpy()), rel=1e-10)


def test_unbiased_cka_matches_reference(xy):
    x, y = xy
    got = unbiased_linear_cka(torch.tensor(x), torch.tensor(y)).item()
    assert got == pytest.approx(_ref_unbiased(x, y), rel=1e-9)


@pytest.mark.parametrize("measure", [linear_cka, unbiased_linear_cka])
def test_cka_invariances(measure, xy):
    x, y = (torch.tensor(v) for v in xy)
    q, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))
    base = measure(x, y).item()
    assert measure(x, y @ q).item() == pytest.approx(base, abs=1e-10)
    assert measure(5.0 * x, 0.1 * y).item() == pytest.approx(base, abs=1e-10)
    assert measure(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_unbiased_cka_never_nan_on_tiny_or_constant_batches():
    torch.manual_seed(0)
    for n in [1, 2, 3, 4, 5] * 200:
        v = unbiased_linear_cka(torch.randn(n, 6), torch.randn(n, 3))
        assert torch.isfinite(v) and -1.0 <= v.item() <= 1.0
    assert unbiased_linear_cka(torch.randn(8, 4), torch.zeros(8, 3)).item() == 0.0


def test_biased_cka_is_inflated_on_wide_features_unbiased_is_not():
    x, y = torch.randn(64, 2000, dtype=torch.float64), torch.randn(64, 2000, dtype=torch.float64)
    assert linear_cka(x, y).item() > 0.5
    assert abs(unbiased_linear_cka(x, y).item()) < 0.1


def test_dmnn_matches_reference():
    g = np.random.default_rng(1)
    z, a = g.normal(size=(30, 6)), g.normal(size=(30, 4))
    got = dmnn(torch.tensor(z), torch.tensor(a), k=5, tau=0.2).item()
    assert got == pytest.approx(_ref_dmnn(z, a, 5, 0.2), rel=1e-9)


def test_dmnn_invariances_and_limit():
    z = torch.randn(50, 8, dtype=torch.float64)
    a = z @ torch.randn(8, 8, dtype=torch.float64) + 0.5 * torch.randn(50, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    base = dmnn(z, a).item()
    assert dmnn(3.0 * z @ q, a).item() == pytest.approx(base, abs=1e-10)
    assert dmnn(z, 0.1 * a).item() == pytest.approx(base, abs=1e-10)
    assert dmnn(z, z, tau=1e-3).item() == pytest.approx(1.0, abs=1e-6)
    assert mutual_knn(z, z).item() == 1.0


def test_dmnn_is_differentiable():
    z = torch.randn(20, 5, requires_grad=True)
    dmnn(z, torch.randn(20, 3)).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_mutual_knn_reference():
    g = np.random.default_rng(2)
    z, a = g.normal(size=(25, 4)), g.normal(size=(25, 4))

    def nbrs(m, k):
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        s = m @ m.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row)[:k]) for row in s]

    want = np.mean([len(p & q) / 3 for p, q in zip(nbrs(z, 3), nbrs(a, 3))])
    assert mutual_knn(torch.tensor(z), torch.tensor(a), k=3).item() == pytest.approx(want)


@pytest.mark.parametrize("name", ["cka", "cka_unbiased", "dmnn", "mse"])
def test_alignment_losses_fall_when_trained(name):
    torch.manual_seed(0)
    a = torch.randn(128, 6)
    z = torch.nn.Linear(6, 9)
    loss_fn = make_alignment(name, (9,), (6,))
    x = a @ torch.randn(6, 6) + 0.1 * torch.randn(128, 6)
    opt = torch.optim.Adam([*z.parameters(), *loss_fn.parameters()], lr=1e-2)
    first = loss_fn(z(x), a).item()
    for _ in range(200):
        loss = loss_fn(z(x), a)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert 0.0 <= first <= 2.0


@pytest.mark.parametrize("measure", [linear_cka, unbiased_linear_cka])
def test_cka_gradient_is_finite_when_features_collapse(measure):
    z = torch.zeros(16, 4, requires_grad=True)
    measure(z, torch.randn(16, 3)).backward()
    assert torch.isfinite(z.grad).all()
