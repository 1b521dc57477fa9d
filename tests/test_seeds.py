"""Seeds come from one table: each purpose's offset from the run seed is fixed, and typos are caught."""

import pytest

from rlhf_utils.seeds import PURPOSES, batch_seed, seed_for


def test_offsets_are_the_ones_the_tiny_run_was_made_with():
    assert seed_for(42, "rollout", 3) == 42 + 3000
    assert seed_for(42, "pair_rule", 2) == 44
    assert seed_for(42, "eval_sampling") == 42 + 7919
    assert seed_for(42, "teacher_answers") == 53
    assert batch_seed(7, 2) == 7 * 100_003 + 2


def test_rollout_seeds_of_different_iterations_and_runs_differ():
    seeds = {seed_for(s, "rollout", t) for s in (42, 43) for t in range(1, 13)}
    assert len(seeds) == 24


def test_unknown_purpose_is_an_error():
    with pytest.raises(KeyError, match="rollouts"):
        seed_for(42, "rollouts")
    assert "eval_sampling" in PURPOSES
