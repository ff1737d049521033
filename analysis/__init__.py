"""Layer 5: what is measured on a converted network: the PyTorch reference recorder, parity layer by layer,
activity counts, energy models and reports (built as a dict, rendered apart), and the Lava cross-check."""
