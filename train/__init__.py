"""Training stage (`edgecls.train`): real data in, a self-describing checkpoint out."""

from .trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
