from .losses import LOSSES, KDConfig
from .train import TrainConfig, TrainResult, accuracy, predict_logits, train

__all__ = ["LOSSES", "KDConfig", "TrainConfig", "TrainResult", "accuracy", "predict_logits", "train"]
