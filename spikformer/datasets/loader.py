"""make_loader: a DataLoader over a SampleDataset with worker processes, whose bad samples end as one-line errors
(or are skipped and counted) in the main process.

A sample's error inside a worker would reach the main process as a multi-line "Caught ... in DataLoader worker
process" message; so each worker catches the data set's DataError, hands it on in the batch, and the main process
raises it again with its own line (or, with dataset.skip_bad, drops the sample and records it)."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import DataError

MAX_WORKERS = 8


def worker_count(asked: int) -> int:
    """At most one worker per CPU this process may use (and MAX_WORKERS); 0 loads in the main process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(int(asked), cpus, MAX_WORKERS))


class _Guarded(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            x, y = self.dataset[i]
            return x, y, None
        except DataError as e:
            return None, None, (int(i), type(e), str(e))


def _collate(items):
    good = [(x, y) for x, y, err in items if err is None]
    errors = [err for _, _, err in items if err is not None]
    if good:
        x = torch.stack([x for x, _ in good])
        y = torch.tensor([y for _, y in good], dtype=torch.int64)
    else:
        x = y = None
    return x, y, errors


class SampleLoader(DataLoader):
    """Yields (x [B, ...] float32, y [B] int64). `skipped`: (index, message) of every sample skipped so far (only
    with dataset.skip_bad; each is also counted in dataset.info['skipped'])."""

    def __init__(self, dataset, batch_size: int, workers: int, shuffle: bool, seed: int):
        generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
        n = worker_count(workers)
        super().__init__(_Guarded(dataset), batch_size=int(batch_size), shuffle=bool(shuffle), num_workers=n,
                         collate_fn=_collate, generator=generator, prefetch_factor=2 if n else None)
        self.samples = dataset
        self.skipped: list[tuple[int, str]] = []

    def __iter__(self):
        for x, y, errors in super().__iter__():
            for index, kind, message in errors:
                if not getattr(self.samples, "skip_bad", False):
                    raise kind(message) if issubclass(kind, DataError) else DataError(message)
                self.skipped.append((index, message))
                info = getattr(self.samples, "info", None)
                if isinstance(info, dict):
                    info["skipped"] = info.get("skipped", 0) + 1
            if x is not None:
                yield x, y


def make_loader(dataset, batch_size: int, workers: int = 0, shuffle: bool = False, seed: int = 0) -> SampleLoader:
    """Batches of `dataset` in index order (shuffle=False), or in the order of a torch.Generator seeded with
    `seed` (the same for the same seed, whatever the worker count)."""
    if int(batch_size) < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    return SampleLoader(dataset, batch_size, workers, shuffle, seed)
