"""Named Spikformer configurations.

`cifar10-4-384` is the official CIFAR model (ZK-Zhou/spikformer, cifar10/cifar10.yml); the ImageNet presets
follow the paper's Spikformer-8-{384,512,768} at 224x224 with a max-pool after every SPS stage; `digits-2-64`
is the small model for scikit-learn's bundled digits that the default job trains.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

PRODUCT_ORDERS = ("qk_first", "kv_first")


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
    product_order: str = "qk_first"  # (Q K^T) V as in the CIFAR code, or Q (K^T V) as in the ImageNet code

    def __post_init__(self):
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpikformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> "SpikformerConfig":
        return replace(self, **changes)


PRESETS: dict[str, SpikformerConfig] = {
    "cifar10-4-384": SpikformerConfig(),
    "imagenet-8-384": SpikformerConfig(img_size=224, num_classes=1000, embed_dim=384, num_heads=12, depth=8,
                                       pool_stages=4, product_order="kv_first"),
    "imagenet-8-512": SpikformerConfig(img_size=224, num_classes=1000, embed_dim=512, num_heads=8, depth=8,
                                       pool_stages=4, product_order="kv_first"),
    "imagenet-8-768": SpikformerConfig(img_size=224, num_classes=1000, embed_dim=768, num_heads=12, depth=8,
                                       pool_stages=4, product_order="kv_first"),
    "digits-2-64": SpikformerConfig(img_size=16, in_channels=1, num_classes=10, embed_dim=64, num_heads=4, depth=2,
                                    T=4, pool_stages=2),
}
DEFAULT_PRESET = "digits-2-64"


class UnknownPresetError(ValueError):
    pass


def get_preset(name: str) -> SpikformerConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
