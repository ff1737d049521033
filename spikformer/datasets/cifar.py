"""`cifar10:DIR` (cifar-10-batches-py: data_batch_1..5, test_batch) and `cifar100:DIR` (cifar-100-python: train,
test, meta; labels b'fine_labels'), the python-format files of the CIFAR home page, read with the restricted
numpy-only unpickler after a size check (spikformer.data.read_cifar_batch). Their own train/test split.

Memory: the uint8 images of the batch files are held in a cache of at most CACHE_BYTES (the whole of CIFAR-10's
or CIFAR-100's training set is 150 MB), filled file by file when a sample of the file is asked for; only the
labels are kept for the whole set. Each sample goes through the eval transform (spikformer.datasets.images)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..data import CIFAR10_TEST_BATCH, CIFAR10_TRAIN_BATCHES, DataError, _unpickle_plain, read_cifar_batch
from ..data_config import DataConfig
from .base import SampleDataset
from .images import array_image, describe_transform, eval_transform, pil_mode, to_raw

CACHE_BYTES = 320 * 2 ** 20

# kind -> (files per split, label key, number of classes, what, folder name)
LAYOUTS = {
    "cifar10": ({"train": tuple(CIFAR10_TRAIN_BATCHES), "test": (CIFAR10_TEST_BATCH,)}, "labels", 10,
                "CIFAR-10 batch", "cifar-10-batches-py"),
    "cifar100": ({"train": ("train",), "test": ("test",)}, "fine_labels", 100, "CIFAR-100 file",
                 "cifar-100-python"),
}


class CifarDataset(SampleDataset):
    def __init__(self, kind: str, root: str, split: str, img_size: int, in_channels: int,
                 data_config: DataConfig, info: dict, skip_bad: bool = False):
        files, self.labels_key, n_classes, self.what, folder = LAYOUTS[kind]
        root_p = Path(root)
        if not root_p.is_dir():
            raise DataError(f"{kind} folder {root} does not exist or is not a directory (expected the {folder} "
                            f"folder)")
        hint = f"the {folder} folder with {', '.join(files['train'] + files['test'])}"
        self.files = [root_p / name for name in files[split]]
        self.mode = pil_mode(in_channels, f"{kind}:{root}")
        self.transform = eval_transform(img_size, data_config)
        self._cache: OrderedDict = OrderedDict()
        labels, self.starts = [], [0]
        for f in self.files:
            x, y = read_cifar_batch(f, self.labels_key, self.what, hint)
            self._remember(f, x)
            labels.append(y)
            self.starts.append(self.starts[-1] + len(y))
        self.labels = np.concatenate(labels)
        classes = _class_names(root_p / "meta", self.what) if kind == "cifar100" else None
        super().__init__(dict(info, name=kind, n=len(self.labels), num_classes=n_classes, classes=classes,
                              split_rule=f"the data set's own {split} files ({', '.join(files[split])})",
                              split_seed=None, value_grid=255, transform=describe_transform(img_size, data_config),
                              files=[str(f) for f in self.files]), skip_bad)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):  # a worker started by spawn reads the files itself
        return dict(self.__dict__, _cache=OrderedDict())

    def _remember(self, f: Path, x: np.ndarray):
        self._cache[f] = x
        self._cache.move_to_end(f)
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > CACHE_BYTES:
            self._cache.popitem(last=False)

    def _images(self, k: int) -> np.ndarray:
        f = self.files[k]
        if f not in self._cache:
            x, y = read_cifar_batch(f, self.labels_key, self.what)
            if not np.array_equal(y, self.labels[self.starts[k]:self.starts[k + 1]]):
                raise DataError(f"{self.what} {f} changed while it was being read")
            self._remember(f, x)
        self._cache.move_to_end(f)
        return self._cache[f]

    def sample(self, i: int):
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        chw = self._images(k)[i - self.starts[k]]
        img = self.transform(array_image(chw, self.mode))
        return to_raw(img), int(self.labels[i])


def _class_names(meta: Path, what: str) -> list[str] | None:
    """CIFAR-100's fine_label_names from its `meta` file (None when there is none)."""
    if not meta.is_file():
        return None
    from ..data import MAX_CIFAR_FILE_BYTES
    if meta.stat().st_size > MAX_CIFAR_FILE_BYTES:
        raise DataError(f"{what} {meta} is larger than {MAX_CIFAR_FILE_BYTES} bytes; refused before reading")
    d = _unpickle_plain(meta, what)
    names = d.get(b"fine_label_names") if isinstance(d, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{what} {meta} has no list of fine_label_names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
