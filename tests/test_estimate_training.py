"""A training cell's estimate: a selection is charged one rate past its grid's edge (bench.perplexity.rates)."""

import dataclasses

import pytest

from bench.core import estimate
from bench.perplexity import grid


def test_a_selection_is_charged_one_extension_unless_its_rates_were_given():
    cells = [c for g in grid.PERPLEXITY_PRESETS["quick"].grids for c in g.cells() if c.task == "lm"]
    selecting = next(c for c in cells if c.selects and len(c.lrs) == 3 and c.lr_extensions == 2)
    given = dataclasses.replace(selecting, lr_extensions=0)  # --lr: the rates as given, never extended
    other_seed = dataclasses.replace(selecting, first_seed=False)  # one training at the selected rate
    one = estimate.training_cell(other_seed) - estimate.CELL_S
    assert estimate.training_cell(given) - estimate.CELL_S == pytest.approx(3 * one)
    assert estimate.training_cell(selecting) - estimate.CELL_S == pytest.approx(4 * one)
    assert estimate.training_cell(dataclasses.replace(other_seed, lr_extensions=0)) == estimate.training_cell(
        other_seed
    )
