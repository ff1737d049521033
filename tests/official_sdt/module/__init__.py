from .ms_conv import MS_Block_Conv
from .sps import MS_SPS


__all__ = [
    "MS_SPS",
    "MS_Block_Conv",
]
