"""Training an adapter, and the regularisers that protect what it already knows."""

from .regularisers import Regulariser
from .trainer import TrainConfig, TrainReport, train_adapter

__all__ = ["Regulariser", "TrainConfig", "TrainReport", "train_adapter"]
