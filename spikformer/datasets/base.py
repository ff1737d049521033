"""What every streaming data set shares: the Dataset protocol, its `.info` dict and the error of one bad sample."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import DataError

SPLITS = ("train", "test")


class BadSampleError(DataError):
    """One sample (an image or event file) that cannot be decoded; names the file."""


class SampleDataset(Dataset):
    """A map-style data set: len(ds), ds[i] -> (x float32 tensor, y int). x is the raw model input (module
    docstring of spikformer.datasets). `info` describes it (spec, name, split, split_rule, n, num_classes,
    value_grid, ...); `skip_bad` tells make_loader to skip samples raising BadSampleError (counted in
    info['skipped'])."""

    def __init__(self, info: dict, skip_bad: bool = False):
        self.info = dict(info, skipped=0)
        self.skip_bad = bool(skip_bad)

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, i: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} of a data set of {n}")
        return self.sample(i % n)


class TensorSampleDataset(SampleDataset):
    """Samples held in memory (the small built-in data sets): x [N, ...] float32, y [N] int64."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, info: dict, skip_bad: bool = False):
        super().__init__(info, skip_bad)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def sample(self, i: int):
        return self.x[i], int(self.y[i])


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return split


def check_labels(labels, num_classes: int | None, model_classes: int, where: str) -> int:
    """The number of classes of a data set (num_classes, or max label + 1); refuses labels the model lacks."""
    hi = int(np.asarray(labels).max(initial=-1))
    n = num_classes if num_classes is not None else hi + 1
    if hi >= model_classes:
        raise DataError(f"{where} has labels up to {hi} but the model has {model_classes} classes")
    return n
