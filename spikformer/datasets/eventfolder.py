"""`events:DIR[:HxW][:split=official|random]`: SpikingJelly's processed event data sets (DIR/events_np/...,
layout and file checks in spikformer/events.py), one file read and integrated per sample.

Splits. With train/ and test/ folders (DVS128 Gesture, N-MNIST) those. Without (CIFAR10-DVS) the official
Spikformer split, cifar10dvs/train.py's split_to_train_test_set(0.9, origin_set, 10) with random_split False:
the samples of each class in the data set's order (SpikingJelly's DatasetFolder: sorted class folders, sorted
files), the first ceil(0.9 n) of a class for training and the rest for testing, class after class.
`split=random` asks for spikformer.data's seeded stratified 80/20 split instead (what spk-train used before)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import events as E
from ..data_base import DataError, stratified_split
from .base import BadSampleError, SampleDataset


class EventFolderDataset(SampleDataset):
    def __init__(self, arg: str, split_rule: str, split: str, img_size: int, in_channels: int, T: int, seed: int,
                 info: dict, skip_bad: bool = False):
        T = E._check_T(T)
        E._check_channels(in_channels, f"events:{arg}")
        dir_, sensor = E.parse_events_arg(arg)
        scan = E.scan_event_folder(dir_)
        known, sensor, source = E.resolve_sensor(scan, sensor)
        self.root, self.sensor, self.T, self.img_size = scan["root"], sensor, T, img_size
        if "all" in scan["splits"]:
            items = scan["splits"]["all"]
            labels = np.array([label for _, label in items], dtype=np.int64)
            if split_rule == "random":
                tr, te = stratified_split(labels, seed)
                rule, split_seed = f"stratified 80/20 with seed {seed} (asked for with split=random)", seed
            else:
                tr, te = E.official_split(labels, len(scan["classes"]))
                rule, split_seed = E.OFFICIAL_SPLIT_RULE, None
            self.items = [items[i] for i in (tr if split == "train" else te)]
        else:
            if split_rule == "random":
                raise DataError(f"events:{arg}: split=random is for folders without train/ and test/; this one has "
                                f"them")
            self.items = scan["splits"][split]
            rule, split_seed = f"the data set's own {split}/ folder", None
        self.labels = np.array([label for _, label in self.items], dtype=np.int64)
        super().__init__(dict(info, name=f"events:{known or Path(dir_).name}", n=len(self.items),
                              num_classes=len(scan["classes"]), classes=list(scan["classes"]), split_rule=rule,
                              split_seed=split_seed, value_grid=1, T=T, sensor=list(sensor), sensor_source=source,
                              integration=E.INTEGRATION, resize=E.resize_method(sensor, img_size),
                              layout=scan["layout"]), skip_bad)
        self.files = [E._where(f, self.root) for f, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, i: int):
        f, label = self.items[i]
        try:
            ev = E.read_event_file(f, self.sensor, E._where(f, self.root))
        except BadSampleError:
            raise
        except DataError as e:
            raise BadSampleError(str(e)) from None
        frames = E.integrate_resized([len(ev["x"])], ev["x"], ev["y"], ev["p"], self.T, self.sensor, self.img_size)
        return torch.from_numpy(frames[0]), int(label)
