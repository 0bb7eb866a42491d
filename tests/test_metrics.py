"""Metric functions over hand-computed accuracy matrices."""

import math

import numpy as np
import pytest

from adaptive_learner.evaluation.metrics import (all_metrics, average_accuracy, backward_transfer, forgetting,
                                                 forward_transfer, learning_accuracy)

R = np.array([[0.9, 0.5, 0.4],
              [0.7, 0.8, 0.5],
              [0.6, 0.7, 0.9]])
B = np.array([0.5, 0.45, 0.35])


@pytest.mark.parametrize("fn,args,expected", [
    (average_accuracy, (R,), (0.6 + 0.7 + 0.9) / 3),
    (backward_transfer, (R,), ((0.6 - 0.9) + (0.7 - 0.8)) / 2),
    (forward_transfer, (R, B), ((0.5 - 0.45) + (0.5 - 0.35)) / 2),
    (forgetting, (R,), ((0.9 - 0.6) + (0.8 - 0.7)) / 2),
    (learning_accuracy, (R,), (0.9 + 0.8 + 0.9) / 3),
])
def test_metric_values(fn, args, expected):
    assert fn(*args) == pytest.approx(expected)


def test_single_task_transfer_is_undefined():
    one = np.array([[0.8]])
    assert math.isnan(backward_transfer(one)) and math.isnan(forward_transfer(one, np.array([0.5])))


def test_final_row_only_gives_accuracy_but_no_transfer():
    partial = np.full((3, 3), np.nan)
    partial[-1] = [0.6, 0.7, 0.8]
    m = all_metrics(partial, B)
    assert m["avg_acc"] == pytest.approx(0.7) and math.isnan(m["bwt"])


def test_average_accuracy_splits_into_learning_and_backward_transfer():
    """AvgAcc = LA + (T-1)/T * BWT: a gap between two strategies is read as learning or as forgetting."""
    T = R.shape[0]
    assert average_accuracy(R) == pytest.approx(learning_accuracy(R) + (T - 1) / T * backward_transfer(R))


def test_learning_accuracy_is_undefined_where_a_task_was_not_scored_after_its_training():
    """Joint training scores only at the end: its LA is NaN, not the last task's accuracy alone."""
    partial = np.full((3, 3), np.nan)
    partial[-1] = [0.6, 0.7, 0.8]
    assert math.isnan(learning_accuracy(partial)) and math.isnan(all_metrics(partial, B)["learning_acc"])
