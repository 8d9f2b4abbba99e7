"""glister_train: train on adaptively selected subsets of the data (GLISTER and baselines)."""

__version__ = "0.1.0"
