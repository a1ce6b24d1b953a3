"""Contract checks for target blocks: a new block registered with ``@register_block`` is tested by
``tests/test_blocks.py`` without writing a test of its own.

For each option set in the block's ``examples`` (or the defaults), and each (input, part-output) shape pair
the block accepts: the spec round-trips through JSON; the module builds, runs a batch, gives finite outputs of
the probed shape, passes gradients to every parameter, and is identical when built twice under one seed.
A block must accept at least one of :data:`SHAPE_CASES`; a shape it refuses must be refused with a
:class:`~nas_theseus.errors.UserError`.
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
