"""How a model's input is preprocessed: the data config that travels with the model.

A Spikformer is trained on images preprocessed in one way (the official code: timm's eval transform, then a
per-channel normalisation) and gives its trained accuracy only on input preprocessed the same way. The data config
holds what that preprocessing needs beyond the architecture (image size and T are in SpikformerConfig):

- `mean`, `std`: per-channel normalisation, None for none (our own digits models: raw values in [0, 1]).
- `interpolation`, `crop_pct`: the eval transform's resize (timm: Resize(floor(img_size / crop_pct)) of the
  shorter side with this interpolation, then CenterCrop(img_size)).
- `origin`: where the values came from (printed and recorded with every result).

Where it comes from (`resolve_data_config`), first found wins: a `--normalize` override; our checkpoint's
`metadata["data_config"]`; a training checkpoint's `args` (mean, std, interpolation, crop_pct, as the official
train.py saved them); the official yml of the model's layout (cifar: cifar10/cifar10.yml; imagenet:
imagenet/imagenet.yml; dvs: no normalisation, event counts as cifar10dvs/train.py feeds them). Our own checkpoints
without the entry (every spk-train checkpoint of an unnormalised data set, written before or after it existed) are
raw [0, 1] input: nothing is written for them, so they stay byte-identical.

The normalisation itself is the official loader's arithmetic (docs/spikformer.md, "Input preprocessing"): timm's
PrefetchLoader keeps 8-bit pixels u and computes (float32(u) - 255 mean) / (255 std) with 255 mean and 255 std
rounded to float32. Our pipeline carries x = u / 255 (float32, as ToTensor), and x * 255 == u exactly in float32
for every 8-bit u, so `normalize` gives the official tensor bit for bit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ground.errors import UserError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
PIXEL_MAX = 255  # normalisation works on 8-bit pixel values, as timm's PrefetchLoader

# The official yml files (ZK-Zhou/spikformer): cifar10/cifar10.yml (also the CIFAR-100 models, same code),
# imagenet/imagenet.yml. cifar10dvs/train.py feeds event-count frames unnormalised.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataConfigError(UserError):
    """A data config that cannot be used (wrong channel count, zero std, unknown interpolation)."""


@dataclass(frozen=True)
class DataConfig:
    mean: tuple | None = None
    std: tuple | None = None
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    origin: str = "none"

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise DataConfigError("a data config needs both mean and std, or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))
            if len(self.mean) != len(self.std) or not self.mean:
                raise DataConfigError(f"mean has {len(self.mean)} values and std {len(self.std)}; they must "
                                      f"have one per input channel")
            if any(not s > 0 for s in self.std):
                raise DataConfigError(f"std must be > 0 for every channel, got {list(self.std)}")
        if self.interpolation not in INTERPOLATIONS:
            raise DataConfigError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if not 0 < float(self.crop_pct) <= 1:
            raise DataConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))

    @property
    def normalized(self) -> bool:
        return self.mean is not None

    def check_channels(self, in_channels: int) -> None:
        if self.normalized and len(self.mean) != in_channels:
            raise DataConfigError(f"the data config ({self.origin}) normalises {len(self.mean)} channels but the "
                                  f"model takes {in_channels}")

    def pixel_mean_std(self):
        """(255 mean, 255 std) as float32 tensors [C], the constants of timm's PrefetchLoader."""
        import torch
        return (torch.tensor([m * PIXEL_MAX for m in self.mean], dtype=torch.float32),
                torch.tensor([s * PIXEL_MAX for s in self.std], dtype=torch.float32))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict, origin: str | None = None) -> "DataConfig":
        if not isinstance(d, dict):
            raise DataConfigError(f"a data config must be a dict, got {type(d).__name__}")
        known = {"mean", "std", "interpolation", "crop_pct", "origin"}
        try:
            kw = {k: d[k] for k in known if k in d and d[k] is not None}
            if origin is not None:
                kw["origin"] = origin
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise DataConfigError(f"invalid data config {d!r}: {e}") from None

    def with_origin(self, origin: str) -> "DataConfig":
        return DataConfig(self.mean, self.std, self.interpolation, self.crop_pct, origin)

    def describe(self) -> str:
        norm = (f"normalised with mean {list(self.mean)} std {list(self.std)}" if self.normalized
                else "raw values in [0, 1], no normalisation")
        return f"{norm}; resize {self.interpolation}, crop_pct {self.crop_pct} ({self.origin})"


RAW = DataConfig(origin="none: raw values in [0, 1]")

OFFICIAL: dict[str, DataConfig] = {
    "cifar": DataConfig(CIFAR_MEAN, CIFAR_STD, "bicubic", 1.0, "official yml of the cifar layout (cifar10/cifar10.yml)"),
    "imagenet": DataConfig(IMAGENET_MEAN, IMAGENET_STD, "bicubic", 1.0,
                           "official yml of the imagenet layout (imagenet/imagenet.yml)"),
    "dvs": DataConfig(origin="official dvs layout (cifar10dvs/train.py): event counts, no normalisation"),
    # BICLab/Spike-Driven-Transformer's conf/ files (timm's loader, the same arithmetic)
    "sdt-cifar": DataConfig(CIFAR_MEAN, CIFAR_STD, "bicubic", 1.0,
                            "official Spike-driven Transformer conf/cifar10 and conf/cifar100 yml"),
    "sdt-imagenet": DataConfig(IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.95,
                               "official Spike-driven Transformer conf/imagenet yml"),
    "sdt-dvs": DataConfig(origin="official Spike-driven Transformer DVS data sets (train.py): event frames, "
                                 "no normalisation"),
}


def from_training_args(args) -> DataConfig | None:
    """The data config of a training checkpoint's `args` (a dict: the official train.py's Namespace as plain
    data); None when they name no mean and std. Values the args leave out take the official yml's."""
    if not isinstance(args, dict) or args.get("mean") is None or args.get("std") is None:
        return None
    interp = args.get("interpolation") or "bicubic"
    crop = args.get("crop_pct")
    return DataConfig.from_dict({"mean": args["mean"], "std": args["std"], "interpolation": interp,
                                 "crop_pct": 1.0 if crop is None else crop}, origin="training checkpoint args")


def parse_normalize(text: str, in_channels: int | None = None) -> DataConfig:
    """--normalize VALUE: 'none' (raw [0, 1]), 'cifar' or 'imagenet' (that official yml), or
    'M1,M2,M3/S1,S2,S3' (mean/std per channel)."""
    t = (text or "").strip().lower()
    if t == "none":
        return RAW.with_origin("--normalize none")
    if t in ("cifar", "imagenet"):
        return OFFICIAL[t].with_origin(f"--normalize {t} ({OFFICIAL[t].origin})")
    mean_s, sep, std_s = t.partition("/")
    try:
        if not sep:
            raise ValueError("no '/'")
        mean = tuple(float(v) for v in mean_s.split(","))
        std = tuple(float(v) for v in std_s.split(","))
    except ValueError:
        raise DataConfigError(f"--normalize {text!r}: use none, cifar, imagenet or MEAN1,MEAN2,.../STD1,STD2,...") \
            from None
    dc = DataConfig(mean, std, "bicubic", 1.0, f"--normalize {text}")
    if in_channels is not None:
        dc.check_channels(in_channels)
    return dc


def resolve_data_config(layout: str, metadata: dict | None, ours: bool, override: str | None = None,
                        in_channels: int | None = None) -> DataConfig:
    """The data config of a loaded model (see the module docstring for the order). `ours`: the file is our own
    checkpoint format (absent entry = raw input)."""
    meta = metadata if isinstance(metadata, dict) else {}
    if override is not None:
        dc = parse_normalize(override, in_channels)
    elif isinstance(meta.get("data_config"), dict):
        dc = DataConfig.from_dict(meta["data_config"], origin="checkpoint data_config")
    elif ours:
        dc = RAW.with_origin("checkpoint (no data_config entry: raw values in [0, 1])")
    else:
        training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
        dc = from_training_args(training.get("args")) or OFFICIAL[layout]
    if in_channels is not None:
        dc.check_channels(in_channels)
    return dc
