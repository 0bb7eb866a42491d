"""Training an adapter, and the regularisers that protect what it already knows."""

from .regularisers import Regulariser
from .head import FeatureHead, fit_task_head, load_head, stage_head
from .trainer import TrainConfig, TrainReport, train_adapter

__all__ = ["FeatureHead", "Regulariser", "TrainConfig", "TrainReport", "fit_task_head", "load_head", "stage_head",
           "train_adapter"]
