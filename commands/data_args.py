"""The data flags every command that reads a data set shares (--data, --workers, --skip-bad), and the test split
of a loaded model's data set as streamed samples: read batch by batch through a DataLoader with workers,
preprocessed as the model's data config says (spikformer.datasets), never whole in memory."""
from __future__ import annotations

import argparse
import functools

from analysis.samples import DatasetSamples
from spikformer.data_config import DataConfig
from spikformer.datasets import SPEC_HELP, open_dataset
from spikformer.datasets.base import TensorSampleDataset
from spikformer.presets import SpikformerConfig

DEFAULT_WORKERS = 2


def add_data_arguments(p: argparse.ArgumentParser, default: str | None = "digits", help_default: str = "digits"):
    p.add_argument("--data", default=default, help=f"data spec (default {help_default}): {SPEC_HELP}")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"data loader worker processes (decoding and transforms; default {DEFAULT_WORKERS}, at "
                        "most one per CPU; 0: in this process)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out samples that cannot be decoded (counted and reported) instead of stopping at "
                        "the first, named")


def model_data_config(metadata: dict) -> DataConfig:
    """The data config load_checkpoint resolved (metadata['data_config'], origin included)."""
    d = metadata.get("data_config") if isinstance(metadata, dict) else None
    return DataConfig.from_dict(d) if isinstance(d, dict) else DataConfig()


def open_split(spec: str, config: SpikformerConfig, data_config: DataConfig, split: str, seed: int,
               skip_bad: bool = False):
    """open_dataset with the arguments in a picklable recipe (a Ray worker reopens the data set from it)."""
    opener = functools.partial(open_dataset, spec, config, data_config, split, seed, skip_bad)
    return opener(), opener


def stream(dataset, opener, indices=None, workers: int = DEFAULT_WORKERS, shared: bool = False) -> DatasetSamples:
    """Samples of `dataset` (all, or `indices` in that order); a data set held in memory is read in this process
    (workers would only copy it)."""
    if isinstance(dataset, TensorSampleDataset):
        workers = 0
    return DatasetSamples(opener, indices, workers, shared, dataset)


def data_facts(spec: str, info: dict, samples: DatasetSamples | None = None, counted: int | None = None) -> dict:
    """What a result records about its data: the spec, the data set's description and, after a run of `samples`
    that counted `counted` of them, how many were skipped as undecodable."""
    keep = ("name", "split", "split_rule", "split_seed", "n", "num_classes", "value_grid", "transform",
            "data_config", "T", "sensor", "integration")
    out = {"spec": spec, **{k: info[k] for k in keep if k in info}}
    if samples is not None and counted is not None:
        out["skipped"] = len(samples) - counted
    return out


BUILT_IN = ("digits", "event-digits")  # small, in memory (spikformer.data); everything else is streamed
DATASET_RECORD = ("spec", "name", "split", "split_seed", "n_train", "n_test", "num_classes", "img_size",
                  "in_channels", "sha256", "value_grid", "max_count")


def streamed_dataset_record(spec: str, config: SpikformerConfig, sets, max_value: float | None = None) -> dict:
    """What a checkpoint trained on streamed data records about it (the in-memory sets add their tensors'
    sha256). Event data: the largest count seen in training and testing (`max_value`), which tells whether the
    input is binary spikes on chip."""
    train_set, test_set = sets
    info = test_set.info
    rec = {"spec": spec, "name": info.get("name"), "split": info.get("split_rule"),
           "split_seed": info.get("split_seed"), "n_train": len(train_set), "n_test": len(test_set),
           "num_classes": max(train_set.info.get("num_classes") or 0, info.get("num_classes") or 0),
           "img_size": config.img_size, "in_channels": config.in_channels, "value_grid": info.get("value_grid")}
    if config.event_input and max_value is not None:
        rec["max_count"] = int(max_value) if float(max_value).is_integer() else float(max_value)
    return rec
