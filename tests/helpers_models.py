"""The compare helper shared by the exactness tests; test models come from spikformer.synthetic."""
from __future__ import annotations

from spikformer.synthetic import randomized_model  # noqa: F401  (the tests' import path)

# A digits-2-64 shrunk to 8x8 images, one block, T = 2: the smallest model every command runs on.
TINY = dict(img_size=8, embed_dim=16, num_heads=2, depth=1, T=2)


def tiny_checkpoint(path):
    """A checkpoint of the TINY model (random weights, the attention driven) trained-on-digits metadata."""
    from spikformer.checkpoint import save_checkpoint
    save_checkpoint(path, randomized_model("digits-2-64", seed=4, attn_drive=1.0, **TINY),
                    {"dataset": {"spec": "digits", "value_grid": 256}})
    return path


def mismatches(ref_records: dict, sim_records: dict) -> dict[str, int]:
    return {name: int((sim_records[name] != r).sum()) for name, r in ref_records.items()}
