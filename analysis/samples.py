"""The samples of a parity or report run: in memory, or streamed from a data set batch by batch.

A run asks its samples for `batches(batch_size)` (consecutive (images, labels) tensors), for `slice(a, b)` (the
samples of one shard) and, for a shard that runs on a Ray worker, `for_worker()` (what travels to it).

- `TensorSamples`: images and labels already in memory (a Python user's tensors, the built-in digits).
- `DatasetSamples`: a map-style torch Dataset (spikformer.datasets) read through a DataLoader with workers, so
  at most a few batches are in memory whatever the data set's size. A shard sent to a Ray worker carries the
  recipe that opens the data set (`opener`, a picklable callable) and its indices, and reads its own slice
  there when the data set's path is visible to the workers (`shared`: a shared file system, or the driver's own
  machine); otherwise the driver reads the shard's samples and ships them as tensors.

Either way the batches, their order and their contents are the same, so the results of a run do not depend on
where its samples came from.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import torch


class Samples(Protocol):
    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> "Samples": ...

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]: ...

    def for_worker(self) -> "Samples": ...


class TensorSamples:
    """Samples held as tensors (images [N, ...], labels [N] or None)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def slice(self, start: int, stop: int) -> "TensorSamples":
        return TensorSamples(self.images[start:stop], None if self.labels is None else self.labels[start:stop])

    def batches(self, batch_size: int):
        for i in range(0, len(self.images), batch_size):
            yield self.images[i:i + batch_size], None if self.labels is None else self.labels[i:i + batch_size]

    def for_worker(self) -> "TensorSamples":
        return self


class _IndexView(torch.utils.data.Dataset):
    """Samples `indices` of a data set, with its `info` and `skip_bad` (what make_loader reads)."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, indices
        self.info = getattr(dataset, "info", None)
        self.skip_bad = getattr(dataset, "skip_bad", False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


class DatasetSamples:
    """Samples `indices` of the data set that `opener()` returns, streamed in order through a DataLoader with
    `workers` worker processes. `shared`: a Ray worker can open the data set itself (see the module docstring)."""

    def __init__(self, opener: Callable[[], torch.utils.data.Dataset], indices: Sequence[int] | None = None,
                 workers: int = 0, shared: bool = False, dataset: torch.utils.data.Dataset | None = None):
        self.opener = opener
        self._dataset = dataset
        self.indices = list(range(len(self.dataset))) if indices is None else list(indices)
        self.workers = max(0, int(workers))
        self.shared = shared

    @property
    def dataset(self) -> torch.utils.data.Dataset:
        if self._dataset is None:
            self._dataset = self.opener()
        return self._dataset

    def __getstate__(self):  # a worker reopens the data set from the recipe; the open one stays here
        state = dict(self.__dict__)
        state["_dataset"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def slice(self, start: int, stop: int) -> "DatasetSamples":
        return DatasetSamples(self.opener, self.indices[start:stop], self.workers, self.shared, self._dataset)

    def batches(self, batch_size: int):
        """Batches in index order, read by make_loader's workers; a bad sample ends the run with one line naming
        its file, or (data set opened with skip_bad) is left out and counted in the data set's info['skipped']."""
        from spikformer.datasets import make_loader
        if self.indices:
            workers = min(self.workers, -(-len(self.indices) // batch_size))
            yield from make_loader(_IndexView(self.dataset, self.indices), batch_size, workers)

    def materialize(self) -> TensorSamples:
        parts = list(self.batches(256))
        if not parts:
            raise ValueError("no samples")
        return TensorSamples(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))

    def for_worker(self):
        return self if self.shared else self.materialize()


def as_samples(images, labels=None) -> Samples:
    """Tensors -> TensorSamples; Samples as they are (labels then come with them)."""
    if isinstance(images, torch.Tensor):
        return TensorSamples(images, labels)
    if labels is not None:
        raise ValueError("labels come with the samples; pass them only with image tensors")
    return images


def samples_sha256(batch_digests: Sequence[str]) -> str:
    """The checksum of a run's samples: sha256 of the hex sha256 of each batch's raw input (ground.hashing.
    array_sha256 of the batch), joined by newlines in order. Each shard hashes its own batches and the lists
    concatenate, so a sharded run records the same value as a one-process run with the same batch size."""
    import hashlib
    return hashlib.sha256("\n".join(batch_digests).encode()).hexdigest()
