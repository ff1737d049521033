"""Named Spike-driven Transformer configurations (Yao et al., NeurIPS 2023; BICLab/Spike-Driven-Transformer),
one per file of the official `conf/` and the model its `train.py` builds from it (`create_model("sdt", ...)`:
img_size, in_channels, num_classes, dim, num_heads, layer, mlp_ratio, time_steps, pooling_stat, spike_mode;
`dvs_mode` is True for the cifar10-dvs data set only; TET where the file sets it).

- `sdt-cifar10-2-256`, `sdt-cifar10-2-512` (and `-tet`), `sdt-cifar100-2-256`, `sdt-cifar100-2-512`: 32x32,
  pooling_stat "0011", T = 4.
- `sdt-imagenet-8-384`, `-6-512`, `-8-512`, `-8-768`: 224x224, 1000 classes, pooling_stat "1111", T = 4;
  `sdt-imagenet-10-384` follows conf/imagenet/10_384_300E_t4.yml, whose `dim` is 512 although its name says
  384 (the official file as it is).
- `sdt-cifar10dvs-2-256`: conf/cifar10-dvs/2_256_200E_t10_TET.yml: 64x64 frames of 2 polarities, T = 10,
  dvs_mode (Erode max-pools in the attention), TET.
- `sdt-gesture-2-256-t10`, `sdt-gesture-2-256-t16`: conf/gesture: 128x128, 11 classes, pooling_stat "0111",
  T = 10 / 16 (no dvs_mode: train.py sets it for cifar10-dvs only).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

SPIKE_MODES = ("lif", "plif")


@dataclass(frozen=True)
class SDTConfig:
    img_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    embed_dim: int = 256
    num_heads: int = 8
    depth: int = 2
    mlp_ratio: int = 4
    T: int = 4
    pooling_stat: str = "0011"  # SPS stages followed by MaxPool2d(3, 2, 1): "1" at stage i
    spike_mode: str = "lif"     # "lif" (MultiStepLIFNode) or "plif" (MultiStepParametricLIFNode, learned tau)
    dvs_mode: bool = False      # Erode (3x3 max-pool) on k, v, k*v and the attention output
    event_input: bool = False   # x [B, T, C, H, W], one frame per step (the official forward takes 5-D input)
    tet: bool = False           # trained with TET (the loss on every step); inference averages the steps

    def __post_init__(self):
        if self.embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8 (SPS uses D/8 channels), got {self.embed_dim}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.pooling_stat) != 4 or set(self.pooling_stat) - {"0", "1"}:
            raise ValueError(f"pooling_stat must be 4 characters of 0/1, got {self.pooling_stat!r}")
        if self.img_size % (2 ** self.pooling_stat.count("1")):
            raise ValueError(f"img_size {self.img_size} is not divisible by 2**(pooled stages)")
        if self.spike_mode not in SPIKE_MODES:
            raise ValueError(f"spike_mode must be one of {SPIKE_MODES}, got {self.spike_mode!r}")
        if self.T < 1 or self.depth < 0:
            raise ValueError("T must be >= 1 and depth >= 0")

    @property
    def hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def grid(self) -> int:
        return self.img_size // (2 ** self.pooling_stat.count("1"))

    @property
    def layout(self) -> str:
        """The official conf family whose data config the model takes (spikformer.data_config.OFFICIAL): event
        frames the DVS confs (no normalisation), 224-pixel images and larger the ImageNet confs, smaller ones the
        CIFAR confs."""
        if self.event_input:
            return "sdt-dvs"
        return "sdt-imagenet" if self.img_size >= 224 else "sdt-cifar"

    @property
    def input_shape(self) -> tuple[int, ...]:
        frame = (self.in_channels, self.img_size, self.img_size)
        return (self.T, *frame) if self.event_input else frame

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SDTConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> "SDTConfig":
        return replace(self, **changes)


def _cifar(classes: int, dim: int, **kw) -> SDTConfig:
    return SDTConfig(img_size=32, num_classes=classes, embed_dim=dim, num_heads=8, depth=2, T=4,
                     pooling_stat="0011", **kw)


def _imagenet(depth: int, dim: int) -> SDTConfig:
    return SDTConfig(img_size=224, num_classes=1000, embed_dim=dim, num_heads=8, depth=depth, T=4,
                     pooling_stat="1111")


def _gesture(T: int) -> SDTConfig:
    return SDTConfig(img_size=128, in_channels=2, num_classes=11, embed_dim=256, num_heads=8, depth=2, T=T,
                     pooling_stat="0111", event_input=True)


SDT_PRESETS: dict[str, SDTConfig] = {
    "sdt-cifar10-2-256": _cifar(10, 256),
    "sdt-cifar10-2-512": _cifar(10, 512),
    "sdt-cifar10-2-512-tet": _cifar(10, 512, tet=True),
    "sdt-cifar100-2-256": _cifar(100, 256),
    "sdt-cifar100-2-512": _cifar(100, 512),
    "sdt-imagenet-8-384": _imagenet(8, 384),
    "sdt-imagenet-6-512": _imagenet(6, 512),
    "sdt-imagenet-8-512": _imagenet(8, 512),
    "sdt-imagenet-10-384": _imagenet(10, 512),  # the conf file's dim (512), see the module docstring
    "sdt-imagenet-8-768": _imagenet(8, 768),
    "sdt-cifar10dvs-2-256": SDTConfig(img_size=64, in_channels=2, num_classes=10, embed_dim=256, num_heads=8,
                                      depth=2, T=10, pooling_stat="0011", dvs_mode=True, event_input=True, tet=True),
    "sdt-gesture-2-256-t10": _gesture(10),
    "sdt-gesture-2-256-t16": _gesture(16),
}

# This project's own models (not in the official conf/): trained on raw [0, 1] input, as the Spikformer digits presets
SDT_OWN_PRESETS: dict[str, SDTConfig] = {
    "sdt-digits-2-64": SDTConfig(img_size=8, in_channels=1, num_classes=10, embed_dim=64, num_heads=4, depth=2, T=4,
                                 pooling_stat="0011"),
    # the built-in event digits (ON/OFF frames), with the cifar10-dvs configuration's Erode (dvs_mode)
    "sdt-event-digits-2-64": SDTConfig(img_size=8, in_channels=2, num_classes=10, embed_dim=64, num_heads=4, depth=2,
                                       T=4, pooling_stat="0011", dvs_mode=True, event_input=True),
}
ALL_SDT_PRESETS = {**SDT_PRESETS, **SDT_OWN_PRESETS}

# the conf/ file each preset follows (BICLab/Spike-Driven-Transformer)
SDT_CONF_FILES = {
    "sdt-cifar10-2-256": "conf/cifar10/2_256_300E_t4.yml", "sdt-cifar10-2-512": "conf/cifar10/2_512_300E_t4.yml",
    "sdt-cifar10-2-512-tet": "conf/cifar10/2_512_300E_t4_TET.yml",
    "sdt-cifar100-2-256": "conf/cifar100/2_256_300E_t4.yml", "sdt-cifar100-2-512": "conf/cifar100/2_512_300E_t4.yml",
    "sdt-imagenet-8-384": "conf/imagenet/8_384_300E_t4.yml", "sdt-imagenet-6-512": "conf/imagenet/6_512_300E_t4.yml",
    "sdt-imagenet-8-512": "conf/imagenet/8_512_300E_t4.yml", "sdt-imagenet-10-384": "conf/imagenet/10_384_300E_t4.yml",
    "sdt-imagenet-8-768": "conf/imagenet/8_768_300E_t4.yml",
    "sdt-cifar10dvs-2-256": "conf/cifar10-dvs/2_256_200E_t10_TET.yml",
    "sdt-gesture-2-256-t10": "conf/gesture/2_256_200E_t10.yml", "sdt-gesture-2-256-t16": "conf/gesture/2_256_200E_t16.yml",
}
