"""`imagenet:DIR`: ImageNet as its users have it, DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG, read with
torchvision's ImageFolder rules (torchvision.datasets.folder.find_classes and make_dataset): class folders in
sorted order are the labels 0.., files found by a sorted walk of each class folder and kept when their name ends
in one of torchvision's IMG_EXTENSIONS (any case); anything else is ignored. Only the index of file paths is
held; each sample is decoded when asked for (images.open_image) and goes through the eval transform."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..data import DataError
from ..data_config import DataConfig
from .base import SampleDataset
from .images import describe_transform, eval_transform, open_image, pil_mode, to_raw

FOLDERS = {"train": "train", "test": "val"}


def _classes(folder: Path) -> list[str]:
    try:
        return find_classes(folder)[0]
    except (OSError, FileNotFoundError) as e:
        raise DataError(f"ImageNet folder {folder}: {_line(e)} (expected <class>/<image> folders)") from None


class ImageFolderDataset(SampleDataset):
    def __init__(self, root: str, split: str, img_size: int, in_channels: int, data_config: DataConfig,
                 info: dict, skip_bad: bool = False):
        root_p = Path(root)
        if not root_p.is_dir():
            raise DataError(f"ImageNet folder {root} does not exist or is not a directory")
        folder = root_p / FOLDERS[split]
        if not folder.is_dir():
            raise DataError(f"ImageNet folder {root} has no '{FOLDERS[split]}' folder (expected "
                            f"{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)")
        classes = _classes(folder)
        other = root_p / FOLDERS["test" if split == "train" else "train"]
        if other.is_dir() and _classes(other) != classes:
            raise DataError(f"ImageNet folders {root_p / 'train'} and {root_p / 'val'} have different class "
                            f"folders; labels would not match")
        try:
            items = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
        except (OSError, ValueError) as e:
            raise DataError(f"ImageNet folder {folder}: {_line(e)}") from None
        self.paths = self.files = [p for p, _ in items]
        self.labels = np.array([c for _, c in items], dtype=np.int64)
        self.root = folder
        self.mode = pil_mode(in_channels, f"imagenet:{root}")
        self.transform = eval_transform(img_size, data_config)
        super().__init__(dict(info, name="imagenet", n=len(self.paths), num_classes=len(classes), classes=classes,
                              split_rule=f"the data set's own {FOLDERS[split]}/ folder (torchvision ImageFolder: "
                                         f"sorted class folders, {', '.join(IMG_EXTENSIONS)})",
                              split_seed=None, value_grid=255, transform=describe_transform(img_size, data_config)),
                         skip_bad)

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, i: int):
        img = open_image(self.paths[i], self.mode, _line(self.paths[i]))
        return to_raw(self.transform(img)), int(self.labels[i])


def _line(e) -> str:
    return " ".join(str(e).split())
