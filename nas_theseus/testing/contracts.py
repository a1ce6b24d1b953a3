"""Contract checks for target blocks: a new block registered with ``@register_block`` is tested by
``tests/test_blocks.py`` without writing a test of its own.

For each option set in the block's ``examples`` (or the defaults), and each (input, part-output) shape pair
the block accepts: the spec round-trips through JSON; the module builds, runs a batch, gives finite outputs of
the probed shape, passes gradients to every parameter, and is identical when built twice under one seed.
A block must accept at least one of :data:`SHAPE_CASES`; a shape it refuses must be refused with a
:class:`~nas_theseus.errors.UserError`.

A block whose class sets ``causal = True`` also runs :func:`check_causal` on the (T, D) sequence cases: its
output at position t must not depend on inputs after t.
"""

from __future__ import annotations

import json

import torch

from ..errors import UserError
from ..targets import BLOCKS, BlockSpec, create_target, probe_output_shape

SHAPE_CASES = [
    ((40,), (32,)),            # vectors
    ((1, 40), (25, 19)),       # 1-D signals
    ((25, 10), (25, 5)),
    ((4, 8, 8), (8, 4, 4)),    # 2-D images
    ((16, 12), (16, 12)),      # (T, D) sequences
    ((16, 12), (16, 24)),
    ((9, 12), (9, 12)),        # (N, D) tokens
]


def check_block(kind: str) -> list[tuple]:
    """Run the contract on one registered block; returns the (options, in, out, result shape) cases run."""
    cls = BLOCKS[kind]
    ran = []
    for options in getattr(cls, "examples", ()) or ({},):
        spec = BlockSpec.of(kind, **options)
        again = BlockSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and hash(again) == hash(spec), f"{spec} does not round-trip through JSON"
        for in_shape, out_shape in SHAPE_CASES:
            try:
                torch.manual_seed(0)
                module = create_target(spec, in_shape, out_shape)
            except UserError:
                continue
            initial = {n: t.clone() for n, t in module.state_dict().items()}
            shape = probe_output_shape(module, in_shape)
            module.train()
            x = torch.randn(3, *in_shape)
            y = module(x)
            assert tuple(y.shape) == (3, *shape), f"{spec}: output {tuple(y.shape)} vs probed {shape}"
            assert torch.isfinite(y).all(), f"{spec}: non-finite output"
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                y.float().pow(2).mean().backward()
                missing = [n for n, p in module.named_parameters() if p.grad is None]
                assert not missing, f"{spec}: no gradient reaches {missing}"
            torch.manual_seed(0)
            twin = create_target(spec, in_shape, out_shape)
            for n, b in twin.state_dict().items():
                assert torch.equal(initial[n], b), f"{spec}: {n} differs when built twice under one seed"
            ran.append((options, in_shape, out_shape, shape))
    assert ran, f"block {kind!r} accepted none of the contract's shape cases"
    return ran


def _perturbed_after(x: torch.Tensor, t: int) -> torch.Tensor:
    """``x`` (B, T, D) with new random values at positions > t."""
    x = x.clone()
    x[:, t + 1:] = torch.randn_like(x[:, t + 1:])
    return x


def _check_no_leak(module, name: str, steps: int, x: torch.Tensor) -> None:
    """Assert that ``module``'s outputs at positions <= t ignore inputs after t, and later outputs do not."""
    y = module(x)
    assert y.shape[:2] == x.shape[:2], f"{name}: output {tuple(y.shape)} is not a sequence of {steps} steps"
    future_seen = False
    for t in sorted({0, steps // 2, steps - 2}):
        y2 = module(_perturbed_after(x, t))
        assert torch.allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-6), \
            f"{name}: outputs at positions <= {t} change when inputs after {t} change (not causal)"
        future_seen |= not torch.allclose(y[:, t + 1:], y2[:, t + 1:], atol=1e-6)
    assert future_seen, f"{name}: outputs after t never change with the inputs after t, so no leak could be seen"


@torch.no_grad()
def check_causal_model(model, ids: torch.Tensor, vocab: int, name: str = "model") -> None:
    """Assert that a token model (B, T) -> (B, T, ...) is causal: changing the tokens after t (to other random
    tokens) leaves its outputs up to t unchanged (atol 1e-5), for a few t. Runs ``model`` in eval mode."""
    was = model.training
    model.eval()
    try:
        y = model(ids)
        steps = ids.shape[1]
        g = torch.Generator().manual_seed(0)
        for t in sorted({0, steps // 2, steps - 2}):
            changed = ids.clone()
            shift = torch.randint(1, vocab, changed[:, t + 1:].shape, generator=g).to(ids.device)
            changed[:, t + 1:] = (changed[:, t + 1:] + shift) % vocab
            y2 = model(changed)
            assert torch.allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-5), \
                f"{name}: outputs at positions <= {t} change when tokens after {t} change (not causal)"
    finally:
        model.train(was)


@torch.no_grad()
def check_causal(kind: str, examples: tuple[dict, ...] | None = None) -> list[tuple]:
    """Check that a block's output at position t depends on no input after t; returns the cases run.

    For each option set (``examples``, else the block's examples, else the defaults) and each (T, D) case of
    :data:`SHAPE_CASES` with T >= 2 that the block accepts: build it in eval mode (float64), run x, then for
    a few t change x at positions > t. Outputs at positions <= t must stay the same (atol 1e-6); outputs after
    t must change for at least one t, so that the check could see a leak. Raises AssertionError on a leak.
    """
    cls = BLOCKS[kind]
    ran = []
    for options in examples or getattr(cls, "examples", ()) or ({},):
        spec = BlockSpec.of(kind, **options)
        for in_shape, out_shape in SHAPE_CASES:
            if len(in_shape) != 2 or in_shape[0] < 2:
                continue
            try:
                torch.manual_seed(0)
                module = create_target(spec, in_shape, out_shape).double().eval()
            except UserError:
                continue
            _check_no_leak(module, f"{spec} on {in_shape}", in_shape[0], torch.randn(2, *in_shape).double())
            ran.append((options, in_shape, out_shape))
    assert ran, f"block {kind!r} accepted none of the contract's (T, D) sequence cases"
    return ran
