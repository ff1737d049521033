"""Layer 3: hardware targets. `conversion.convert(source, options) -> Build` is the one conversion route; the
targets (`nir`, `loihi`) register by name in `base` and are imported on first use, so importing this package
stays light (the isolated Lava worker imports hw_backends.loihi without torch)."""
