from .spikeformer import sdt

__all__ = ["sdt"]
