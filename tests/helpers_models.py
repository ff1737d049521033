"""The compare helper shared by the exactness tests; test models come from spikformer.synthetic."""
from __future__ import annotations

from spikformer.synthetic import randomized_model  # noqa: F401  (the tests' import path)


def mismatches(ref_records: dict, sim_records: dict) -> dict[str, int]:
    return {name: int((sim_records[name] != r).sum()) for name, r in ref_records.items()}
