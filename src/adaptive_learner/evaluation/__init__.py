"""Measuring continual learning: metrics, plots and the run harness."""

from .metrics import (all_metrics, average_accuracy, backward_transfer, forgetting, forward_transfer,
                      learning_accuracy)

__all__ = ["all_metrics", "average_accuracy", "backward_transfer", "forgetting", "forward_transfer",
           "learning_accuracy"]
