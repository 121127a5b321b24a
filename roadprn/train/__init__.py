"""Training loops: base segmentation models (``train base``); PatchRefineNet lives beside it."""

from roadprn.train.base import TrainBaseOptions, TrainResult, make_options, train_base
from roadprn.train.data import TrainingPair, read_pairs_csv, split_pairs

__all__ = ["TrainBaseOptions", "TrainResult", "TrainingPair", "make_options", "read_pairs_csv",
           "split_pairs", "train_base"]
