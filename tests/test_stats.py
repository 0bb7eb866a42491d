"""The paired bootstrap interval of AvgAcc differences, on synthetic per-example outcomes."""

import numpy as np
import pytest

from adaptive_learner.evaluation.stats import avg_accuracy, compare, paired_bootstrap


def outcomes(n: int, right: int, seed: int) -> np.ndarray:
    """``n`` examples, ``right`` of them right, at random places."""
    v = np.zeros(n, dtype=int)
    v[np.random.default_rng(seed).choice(n, right, replace=False)] = 1
    return v


def test_a_clear_difference_gives_an_interval_that_excludes_zero():
    a = {"t1": outcomes(200, 180, 0), "t2": outcomes(150, 120, 1)}
    b = {"t1": outcomes(200, 100, 2), "t2": outcomes(150, 75, 3)}
    d = paired_bootstrap([a], [b], [0])
    assert d.mean == pytest.approx(avg_accuracy(a) - avg_accuracy(b)) == pytest.approx((0.4 + 0.3) / 2)
    assert 0 < d.low < d.mean < d.high and d.excludes_zero


def test_equal_accuracy_gives_an_interval_that_includes_zero():
    a = {"t1": outcomes(200, 140, 0), "t2": outcomes(100, 60, 1)}
    b = {"t1": outcomes(200, 140, 7), "t2": outcomes(100, 60, 8)}  # same counts, other examples right
    d = paired_bootstrap([a], [b], [0])
    assert d.mean == 0.0 and d.low < 0 < d.high and not d.excludes_zero


def test_identical_strategies_give_a_zero_width_interval():
    a = {"t1": outcomes(120, 70, 0), "t2": outcomes(80, 50, 1)}
    d = paired_bootstrap([a, a], [dict(a), dict(a)], [0, 1])
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0) and not d.excludes_zero


def test_pairing_separates_a_small_consistent_difference_that_unpaired_resampling_cannot():
    b = outcomes(400, 300, 0)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:12]] = 1  # a is b plus 12 more examples right: +0.03
    paired = paired_bootstrap([{"t": a}], [{"t": b}], [0])
    assert paired.mean == pytest.approx(0.03) and paired.excludes_zero
    rng = np.random.default_rng(0)  # resampling each strategy on its own draw of examples
    unpaired = [a[rng.integers(0, 400, 400)].mean() - b[rng.integers(0, 400, 400)].mean() for _ in range(2000)]
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)


def test_runs_of_one_seed_share_the_resample_of_its_test_examples():
    """Two task orders of one seed score the same examples: a gain in one run and the same loss in
    the other cancel in every resample, so the interval is a point; as separate seeds they do not."""
    base = outcomes(100, 60, 0)
    up = base.copy()
    flip = np.flatnonzero(base == 0)[:10]
    up[flip] = 1
    a = [{"t": up}, {"t": base}]
    b = [{"t": base}, {"t": up}]
    same_seed = paired_bootstrap(a, b, [0, 0])
    assert (same_seed.low, same_seed.high) == (0.0, 0.0)
    two_seeds = paired_bootstrap(a, b, [0, 1])
    assert two_seeds.mean == 0.0 and two_seeds.low < 0 < two_seeds.high


def test_the_interval_is_seeded_and_narrows_with_more_examples():
    a1, b1 = {"t": outcomes(100, 70, 0)}, {"t": outcomes(100, 60, 1)}
    assert paired_bootstrap([a1], [b1], [0]) == paired_bootstrap([a1], [b1], [0])
    a2 = {"t": np.tile(a1["t"], 9)}
    b2 = {"t": np.tile(b1["t"], 9)}
    wide, narrow = paired_bootstrap([a1], [b1], [0]), paired_bootstrap([a2], [b2], [0])
    assert narrow.high - narrow.low < 0.5 * (wide.high - wide.low)


def test_mismatched_examples_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([{"t": [1, 0, 1]}], [{"t": [1, 0]}], [0])
    with pytest.raises(ValueError, match="different tasks"):
        paired_bootstrap([{"t": [1]}], [{"u": [1]}], [0])


def test_compare_pairs_runs_by_seed_and_order_and_skips_unrecorded_ones():
    a, b = {"t": outcomes(50, 40, 0)}, {"t": outcomes(50, 20, 1)}
    correct = {("x", 0, 0): a, ("ref", 0, 0): b, ("x", 1, 0): a, ("old", 0, 0): a}
    d = compare(correct, "x", "ref")
    assert d is not None and d.runs == 1 and d.mean == pytest.approx(0.4)
    assert compare(correct, "old", "missing") is None
    assert d.to_dict()["excludes_zero"] is True


def test_bwt_paired_is_the_mean_change_from_right_after_each_stage_to_the_end():
    from adaptive_learner.evaluation.stats import bwt_paired

    run = {"tasks": ["a", "b", "c"],
           "learned_correct": [[1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 0, 0]],
           "final_correct": {"a": [1, 0, 0, 1], "b": [1, 0, 1, 0], "c": [1, 1, 0, 0]}}
    d = bwt_paired([run], [0])
    assert d.mean == pytest.approx(((0.5 - 1.0) + (0.5 - 0.5)) / 2)  # the last stage has nothing after it
    assert d.low <= d.mean <= d.high < 0 + 1e-12
    same = {**run, "final_correct": {"a": [1, 1, 1, 1], "b": [1, 0, 1, 0], "c": [0, 0, 0, 0]}}
    assert (bwt_paired([same], [0]).low, bwt_paired([same], [0]).high) == (0.0, 0.0)
    # a stage without outcomes (a strategy scored only at the end, or results from before they were kept): none
    assert bwt_paired([{**run, "learned_correct": [None, [1, 0, 1, 0], [1, 1, 0, 0]]}], [0]) is None
    assert bwt_paired([{k: v for k, v in run.items() if k != "learned_correct"}], [0]) is None
    # a revisited task: each of its stages counts, against the same final outcomes
    again = {"tasks": ["a", "b", "a"], "learned_correct": [[1, 1], [0, 0], [1, 0]],
             "final_correct": {"a": [1, 0], "b": [1, 1]}}
    assert bwt_paired([again], [0]).mean == pytest.approx(((0.5 - 1.0) + (1.0 - 0.0)) / 2)
