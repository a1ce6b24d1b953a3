"""Every registered block runs through the contract; specs validate their options."""

import pytest

from nas_theseus.errors import UserError
from nas_theseus.targets import BLOCKS, BlockSpec, create_target, list_blocks, probe_output_shape
from nas_theseus.testing import check_block, check_causal


@pytest.mark.parametrize("kind", list_blocks())
def test_block_contract(kind):
    check_block(kind)


@pytest.mark.parametrize("kind", [k for k in list_blocks() if getattr(BLOCKS[k], "causal", None) is True])
def test_causal_blocks_do_not_see_the_future(kind):
    check_causal(kind)


def test_spec_normalises_defaults_and_types():
    assert BlockSpec.of("mlp", width=64, norm=None) == BlockSpec.of("mlp", width=64)
    assert BlockSpec.of("mlp", dropout=0) == BlockSpec.of("mlp")
    assert BlockSpec.of("mlp", width=64).to_dict(full=True)["depth"] == 1


@pytest.mark.parametrize("bad, message", [
    ({"kind": "mpl"}, "did you mean 'mlp'"),
    ({"kind": "mlp", "widht": 3}, "did you mean 'width'"),
    ({"kind": "mlp", "width": "wide"}, "must be int | None"),
    ({"kind": "mlp", "width": True}, "must be int | None"),
    ({"kind": "mlp", "width": [1, 2]}, "must be None/bool/int/float/str"),
    ({"kind": "mlp", "depth": 0}, "depth >= 1"),
    ({"kind": "mlp", "activation": "relu6"}, "unknown activation"),
    ({"kind": "conv1d", "norm": "group"}, "unknown norm"),
    ({"width": 3}, "'kind' key"),
])
def test_bad_specs_are_one_line_user_errors(bad, message):
    with pytest.raises(UserError, match=message.replace("|", r"\|")) as e:
        BlockSpec.from_dict(bad)
    assert "\n" not in str(e.value)


def test_shapes_per_block():
    assert probe_output_shape(create_target(BlockSpec.of("mlp"), (1, 40), (25, 19)), (1, 40)) == (25, 19)
    assert probe_output_shape(create_target(BlockSpec.of("mlp", width=7), (1, 40), (25, 19)), (1, 40)) == (7,)
    conv = create_target(BlockSpec.of("conv1d", stride=2), (25, 19), (25, 10))
    assert probe_output_shape(conv, (25, 19)) == (25, 10)
    assert probe_output_shape(create_target(BlockSpec.of("lowrank", rank=3), (9,), (2, 5)), (9,)) == (2, 5)
    with pytest.raises(UserError, match=r"conv2d reads \(C, H, W\)"):
        create_target(BlockSpec.of("conv2d"), (25, 19), (25, 10))
