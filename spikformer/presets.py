"""Named Spikformer configurations, one per official model (ZK-Zhou/spikformer) plus small ones for the built-in
data sets.

Layouts (`SpikformerConfig.layout`): the official code exists in three module layouts that differ in parameter
names, shapes and a few numbers; one Spikformer class builds each of them (spikformer/model.py):

- "cifar"    cifar10/model.py: q/k/v/proj and the MLP are nn.Linear with bias over [T, B, N, C] tokens,
             attention scale 0.125, (Q K^T) V. Image input, repeated at every time step.
- "imagenet" imagenet/model.py: q/k/v bias-free Conv1d (kernel 1), proj Conv1d with bias, MLP 1x1 Conv2d with
             bias + BatchNorm2d over [T, B, C, H, W]; max-pool after all four SPS stages; scale 0.125,
             Q (K^T V). Image input, repeated at every time step.
- "dvs"      cifar10dvs/model.py: q/k/v bias-free Conv1d, proj and MLP Conv1d with bias + BatchNorm1d over
             [T, B, C, N]; max-pool after all four SPS stages; scale 0.25, (Q K^T) V; an unused `pos_embed`
             [1, N, D] and `norm` LayerNorm (in the state dict, never called, as upstream). Event input: x is
             [B, T, C, H, W], one frame per time step (`config.event_input`).

Presets:
- `cifar10-4-384`: the official CIFAR-10 model (cifar10/model.py, cifar10/cifar10.yml).
- `imagenet-8-{384,512,768}`: the official ImageNet model (imagenet/model.py, imagenet/imagenet.yml: 224x224,
  1000 classes, T = 4 as hard-coded in its forward). The code registers 8-512 with 8 heads; the paper's 8-384
  and 8-768 (Table 2) differ only in width; their head counts (12, 12) are not given by the official code and
  do not change any parameter.
- `cifar10dvs-2-256`: the official CIFAR10-DVS model (cifar10dvs/model.py: 128x128, 2 polarities, 256 dims,
  16 heads, 2 blocks, 10 classes; cifar10dvs/train.py: T = 16).
- `dvs128-2-256`: the paper's DVS128 Gesture model (Zhou et al., ICLR 2023, Table 3: Spikformer-2-256 at
  T = 16, 98.3 %): the cifar10dvs/model.py network with its default 11 classes (the repository has no
  separate DVS128 code).
- `digits-2-64`: the small model for scikit-learn's bundled digits that the default job trains.
- `event-digits-2-64`: the same size in the "dvs" layout for the event version of digits (2 polarities,
  16x16, T = 8). At 16x16 the official four max-pools would leave one token, so it pools after the last two
  SPS stages (4x4 tokens, as digits-2-64); max-pools have no parameters, so the layout is unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

PRODUCT_ORDERS = ("qk_first", "kv_first")
LAYOUTS = ("cifar", "imagenet", "dvs")
ATTN_SCALES = {"cifar": 0.125, "imagenet": 0.125, "dvs": 0.25}  # SSA.scale of each official file


@dataclass(frozen=True)
class SpikformerConfig:
    img_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    embed_dim: int = 384
    num_heads: int = 12
    depth: int = 4
    mlp_ratio: float = 4.0
    T: int = 4
    pool_stages: int = 2  # SPS stages (counted from the last) followed by MaxPool2d(3, 2, 1)
    product_order: str = "qk_first"  # (Q K^T) V as in the CIFAR/DVS code, or Q (K^T V) as in the ImageNet code
    layout: str = "cifar"  # module layout of the official file it follows (see the module docstring)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8 (SPS uses D/8 channels), got {self.embed_dim}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not 0 <= self.pool_stages <= 4:
            raise ValueError(f"pool_stages must be 0..4, got {self.pool_stages}")
        if self.img_size % (2 ** self.pool_stages):
            raise ValueError(f"img_size {self.img_size} is not divisible by 2**pool_stages")
        if self.product_order not in PRODUCT_ORDERS:
            raise ValueError(f"product_order must be one of {PRODUCT_ORDERS}, got {self.product_order!r}")
        if self.T < 1 or self.depth < 0:
            raise ValueError("T must be >= 1 and depth >= 0")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def grid(self) -> int:
        return self.img_size // (2 ** self.pool_stages)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def attn_scale(self) -> float:
        return ATTN_SCALES[self.layout]

    @property
    def event_input(self) -> bool:
        """True: the model takes x [B, T, C, H, W] (a frame of event counts per time step, as the official DVS
        code); False: x [B, C, H, W], repeated at every time step (direct encoding)."""
        return self.layout == "dvs"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample of model input: (T, C, H, W) for event input, else (C, H, W)."""
        frame = (self.in_channels, self.img_size, self.img_size)
        return (self.T, *frame) if self.event_input else frame

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpikformerConfig":
        """Configs written before `layout` existed (spk-train checkpoints) have no such key: they are the CIFAR
        layout, the default."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> "SpikformerConfig":
        return replace(self, **changes)


def _imagenet(dim: int, heads: int) -> SpikformerConfig:
    return SpikformerConfig(img_size=224, num_classes=1000, embed_dim=dim, num_heads=heads, depth=8, T=4,
                            pool_stages=4, product_order="kv_first", layout="imagenet")


def _dvs(num_classes: int) -> SpikformerConfig:
    return SpikformerConfig(img_size=128, in_channels=2, num_classes=num_classes, embed_dim=256, num_heads=16,
                            depth=2, T=16, pool_stages=4, product_order="qk_first", layout="dvs")


PRESETS: dict[str, SpikformerConfig] = {
    "cifar10-4-384": SpikformerConfig(),
    "imagenet-8-384": _imagenet(384, 12),
    "imagenet-8-512": _imagenet(512, 8),
    "imagenet-8-768": _imagenet(768, 12),
    "cifar10dvs-2-256": _dvs(10),
    "dvs128-2-256": _dvs(11),
    "digits-2-64": SpikformerConfig(img_size=16, in_channels=1, num_classes=10, embed_dim=64, num_heads=4, depth=2,
                                    T=4, pool_stages=2),
    "event-digits-2-64": SpikformerConfig(img_size=16, in_channels=2, num_classes=10, embed_dim=64, num_heads=4,
                                          depth=2, T=8, pool_stages=2, layout="dvs"),
}
DEFAULT_PRESET = "digits-2-64"
OWN_PRESETS = ("digits-2-64", "event-digits-2-64")  # this project's models: trained on raw [0, 1] input


class UnknownPresetError(ValueError):
    pass


def get_preset(name: str) -> SpikformerConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
