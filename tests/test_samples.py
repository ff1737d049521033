"""analysis.samples: a streamed data set gives the batches of the same samples held in memory, in order; what a Ray
shard receives (the recipe that reopens the data set, or the driver's tensors) gives them too; the checksum of a run's
samples does not depend on how the batches were grouped into shards."""
from __future__ import annotations

import functools
import pickle

import numpy as np
import torch

from analysis.samples import DatasetSamples, TensorSamples, samples_sha256
from ground.hashing import array_sha256
from spikformer.data_config import RAW
from spikformer.datasets import open_dataset
from spikformer.presets import get_preset

CFG = get_preset("digits-2-64").with_(img_size=8)


def _npz(tmp_path, n=117):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(n) % 3)
    return f"npz:{tmp_path / 'd.npz'}"


def _all(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_streamed_batches_are_the_samples_in_order(tmp_path):
    spec = _npz(tmp_path)
    opener = functools.partial(open_dataset, spec, CFG, RAW, "test", 0)
    ds = opener()
    direct = [ds[i] for i in range(len(ds))]
    x_ref = torch.stack([x for x, _ in direct])
    y_ref = torch.tensor([y for _, y in direct])
    for workers in (0, 2):
        s = DatasetSamples(opener, None, workers, dataset=ds)
        batches = list(s.batches(4))
        assert [len(x) for x, _ in batches] == [min(4, len(ds) - i) for i in range(0, len(ds), 4)]
        x, y = _all(batches)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    picked = DatasetSamples(opener, [5, 1, 3], 0, dataset=ds)
    x, y = _all(picked.batches(2))
    assert torch.equal(x, x_ref[[5, 1, 3]]) and torch.equal(y, y_ref[[5, 1, 3]])


def test_what_a_shard_receives_gives_the_same_batches(tmp_path):
    spec = _npz(tmp_path)
    opener = functools.partial(open_dataset, spec, CFG, RAW, "test", 0)
    ds = opener()
    whole = DatasetSamples(opener, None, 0, dataset=ds)
    x_ref, y_ref = _all(whole.batches(4))
    shared = whole.slice(4, 12)
    shared.shared = True
    sent = pickle.loads(pickle.dumps(shared.for_worker()))  # as Ray ships it: the recipe and the indices
    assert sent._dataset is None and isinstance(sent, DatasetSamples)
    shipped = whole.slice(4, 12).for_worker()  # not shared: the driver's tensors
    assert isinstance(shipped, TensorSamples)
    for part in (sent, shipped):
        x, y = _all(part.batches(4))
        assert torch.equal(x, x_ref[4:12]) and torch.equal(y, y_ref[4:12])


def test_the_samples_checksum_is_the_same_in_any_grouping_of_batches():
    x = torch.rand(10, 1, 4, 4)
    digests = [array_sha256(x[i:i + 3]) for i in range(0, 10, 3)]
    assert samples_sha256(digests[:2] + digests[2:]) == samples_sha256(digests)
    assert samples_sha256(digests) != samples_sha256(digests[::-1])  # the order counts
