"""One Registry for the named kinds: a name registered twice is refused, an unknown name is one line with the
closest valid one, and every registry of kinds uses it."""

from __future__ import annotations

import pytest

from nas_theseus.errors import UserError
from nas_theseus.utils.registry import Registry


def test_a_registry_refuses_a_second_entry_and_names_the_closest_on_a_miss():
    r = Registry("colour", {"red": 1})
    assert r.register("green")(2) == 2 and dict(r) == {"red": 1, "green": 2}
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        r.add("red", 3)
    assert r["red"] == 1 and r.lookup("green") == 2 and r.listing() == "green, red"
    with pytest.raises(UserError, match=r"unknown colour 'gren' \(did you mean 'green'\?\)"):
        r.lookup("gren")


def test_every_registry_of_kinds_is_one():
    from nas_theseus.align import ALIGNMENTS
    from nas_theseus.data import DATASETS
    from nas_theseus.data.augment import AUGMENTS, Augment, register_augment
    from nas_theseus.guides.builtin import BUILTIN_GUIDES
    from nas_theseus.guides.sources import GUIDE_SOURCES
    from nas_theseus.measure.runtimes import RUNTIMES
    from nas_theseus.study.objectives import OBJECTIVES
    from nas_theseus.targets import BLOCKS, BRIDGES
    from nas_theseus.targets.layers import ACTIVATIONS, NORMS

    registries = (DATASETS, AUGMENTS, BUILTIN_GUIDES, GUIDE_SOURCES, RUNTIMES, OBJECTIVES, BLOCKS, ACTIVATIONS,
                  ALIGNMENTS, BRIDGES, NORMS)
    assert all(isinstance(r, Registry) and len(r) for r in registries)

    class Again(Augment):
        name = "crop"

    with pytest.raises(ValueError, match="augmentation 'crop' is registered twice"):
        register_augment(Again)



def test_a_mistyped_loss_bridge_or_norm_is_one_line_with_the_closest():
    from nas_theseus.align import make_alignment
    from nas_theseus.targets import BlockSpec, create_target, make_bridge

    with pytest.raises(UserError, match=r"unknown alignment loss 'cak' \(did you mean 'cka'\?\)"):
        make_alignment("cak", (4,), (4,))
    with pytest.raises(UserError, match=r"unknown bridge 'stich' \(did you mean 'stitch'\?\)"):
        make_bridge("stich", (4,), (5,))
    with pytest.raises(UserError, match=r"unknown norm 'btach' \(did you mean 'batch'\?\)"):
        create_target(BlockSpec.of("mlp", width=8, norm="btach"), (4,), (8,))
