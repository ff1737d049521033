"""Data sets as their users have them, read one sample at a time and preprocessed as the official code does.

    ds = open_dataset(spec, config, data_config, split="test", seed=0, skip_bad=False)
    len(ds); x, y = ds[i]; ds.info
    for x, y in make_loader(ds, batch_size=64, workers=2): ...

x is the RAW model input, never normalised (the model normalises itself: Spikformer.normalize_input): images
float32 [C, H, W] of pixel / 255 (x * 255 is the 8-bit pixel exactly), event frames float32 [T, 2, H, W] of
counts. Specs (docs/data.md has each layout, split rule and transform with its official source):

    digits, event-digits           built in, in memory; the tensors of spikformer.data.load_dataset
    cifar10:DIR, cifar100:DIR      cifar-10-batches-py / cifar-100-python            (cifar.py)
    imagenet:DIR                   DIR/train/<class>/*, DIR/val/<class>/*            (imagefolder.py)
    npz:FILE                       arrays x, y                                       (npz.py)
    events:DIR[:HxW][:split=random]  SpikingJelly events_np                          (eventfolder.py)

info: spec, name, split ('train'/'test'), split_rule (which rule made it), split_seed, n, num_classes, classes
(when named), value_grid (255: 8-bit images; 1: event counts; None: unknown), transform, data_config, img_size,
in_channels, skipped (samples make_loader skipped); events add T, sensor, sensor_source, integration, resize.
Every problem raises spikformer.data.DataError (a UserError) with one line; an undecodable sample raises its
subclass BadSampleError naming the file.
"""
from __future__ import annotations

from ..data import DataError, load_dataset_with_info, split_spec
from ..data_config import DataConfig
from ..presets import SpikformerConfig
from .base import BadSampleError, SampleDataset, TensorSampleDataset, check_labels, check_split
from .loader import SampleLoader, make_loader, worker_count

__all__ = ["open_dataset", "make_loader", "parse_dataset_spec", "DataError", "BadSampleError", "SampleDataset",
           "SampleLoader", "worker_count", "SPEC_HELP"]

SPEC_HELP = ("digits, event-digits, cifar10:DIR (cifar-10-batches-py), cifar100:DIR (cifar-100-python), "
             "imagenet:DIR (train/ and val/ class folders), npz:FILE (arrays x and y) or "
             "events:DIR[:HxW][:split=random] (SpikingJelly events_np folder)")
IMAGE_KINDS = ("digits", "cifar10", "cifar100", "imagenet", "npz")
EVENT_KINDS = ("event-digits", "events")


def parse_dataset_spec(spec: str) -> tuple[str, str | None, str]:
    """spec -> (kind, argument, split rule): 'cifar100:DIR' -> ('cifar100', 'DIR', 'official');
    'events:DIR:128x128:split=random' -> ('events', 'DIR:128x128', 'random')."""
    kind, arg, built_in = split_spec(spec, SPEC_HELP)
    if built_in:
        return kind, None, "official"
    if kind not in IMAGE_KINDS + EVENT_KINDS:
        raise DataError(f"unknown data spec {spec!r}; use one of: {SPEC_HELP}")
    rule = "official"
    if kind == "events":
        from ..events import parse_split_option
        arg, rule = parse_split_option(arg)
    if not arg:
        raise DataError(f"data spec {spec!r} needs a path after '{kind}:'; use one of: {SPEC_HELP}")
    return kind, arg, rule


def open_dataset(spec: str, config: SpikformerConfig, data_config: DataConfig, split: str, seed: int = 0,
                 skip_bad: bool = False) -> SampleDataset:
    """The `split` ('train' or 'test') of data spec `spec` as the model `config` takes it (img_size,
    in_channels, T), images transformed as `data_config` says (interpolation, crop_pct; its mean/std are the
    model's business). `seed` picks the seeded splits (digits, npz, events split=random). `skip_bad`: make_loader
    skips undecodable samples and counts them in info['skipped'] instead of raising BadSampleError."""
    check_split(split)
    kind, arg, rule = parse_dataset_spec(spec)
    if (kind in EVENT_KINDS) != config.event_input:
        what = "event frames" if kind in EVENT_KINDS else "images"
        takes = "event frames [T, C, H, W] (dvs layout)" if config.event_input else "images"
        raise DataError(f"data spec {spec!r} gives {what} but the model takes {takes}")
    info = {"spec": spec, "split": split, "img_size": config.img_size, "in_channels": config.in_channels,
            "data_config": data_config.to_dict()}
    size, chans = config.img_size, config.in_channels
    if kind in ("digits", "event-digits"):
        ds = _built_in(spec, config, split, seed, info, skip_bad)
    elif kind in ("cifar10", "cifar100"):
        from .cifar import CifarDataset
        ds = CifarDataset(kind, arg, split, size, chans, data_config, info, skip_bad)
    elif kind == "imagenet":
        from .imagefolder import ImageFolderDataset
        ds = ImageFolderDataset(arg, split, size, chans, data_config, info, skip_bad)
    elif kind == "npz":
        from .npz import NpzDataset
        ds = NpzDataset(arg, split, size, chans, data_config, seed, info, skip_bad)
    else:
        from .eventfolder import EventFolderDataset
        ds = EventFolderDataset(arg, rule, split, size, chans, config.T, seed, info, skip_bad)
    ds.info["num_classes"] = check_labels(ds.labels, ds.info.get("num_classes"), config.num_classes,
                                          f"data spec {spec!r}")
    return ds


def _built_in(spec: str, config: SpikformerConfig, split: str, seed: int, info: dict, skip_bad: bool):
    """digits / event-digits: small, in memory, exactly spikformer.data's tensors (the digits checkpoints and
    their recorded sha256 depend on them)."""
    (x_tr, y_tr, x_te, y_te), legacy = load_dataset_with_info(spec, config.img_size, config.in_channels, seed,
                                                              T=config.T if config.event_input else None)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    keep = {k: legacy[k] for k in ("name", "T", "sensor", "sensor_source", "integration", "resize", "rendering")
            if k in legacy}
    ds = TensorSampleDataset(x, y, dict(info, **keep, n=len(y), num_classes=legacy["num_classes"],
                                        split_rule=f"{legacy['split']} (sklearn train_test_split, seed {seed})",
                                        split_seed=seed, value_grid=legacy["value_grid"],
                                        transform="spikformer.data (values / 16, bilinear resize)"
                                        if legacy["name"] == "digits" else "rendered (spikformer.events)",
                                        sha256_both_splits=legacy["sha256"]), skip_bad)
    ds.labels = y.numpy()
    return ds
