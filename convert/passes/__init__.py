"""Passes over the IR, each in its own module, each exact on its own. `lower` runs the standard pipeline that
turns the frontend graph into spike-only synaptic operations. It keeps a model's input normalisation (InputNorm:
exact float semantics, a NIR node); targets that take raw pixels fold it into the first convolution afterwards
(fold_input_norm, run by the Loihi quantiser after fold_bn). The "maxpool_or" step lowers max-pools over spikes
as OR (maxpool_or) and max-pools over graded values as a chain of graded ReLU neurons (maxpool_graded)."""
from __future__ import annotations

from .. import ir
from ..options import SSA_FORMS
from . import (fold_bn, head_readout, maxpool_graded, maxpool_or, residual_graded, residual_streams, sdt_relays,
               ssa_binary, ssa_graded)

PIPELINE = ("fold_bn", "maxpool_or", "residual_streams", "ssa", "head_readout")


def lower(g: ir.Graph, ssa_order: str = "auto", upto: str | None = None, ssa_form: str = "binary",
          memo: dict | None = None) -> ir.Graph:
    """Runs the passes in order on a copy of `g` (stopping after `upto` when given). `ssa_form` "binary" uses
    only binary spikes and threshold neurons (standard NIR, any chip); "graded" uses Loihi 2 graded spikes:
    product neurons in the SSA and graded relays for the residual sums (the "residual_streams" step then runs
    residual_graded). `memo`: a dict kept over several lowerings of `g` (passes that can share arrays between
    them do: head_readout)."""
    if ssa_form not in SSA_FORMS:
        raise ValueError(f"unknown SSA form {ssa_form!r}; choose one of {SSA_FORMS}")
    g = g.copy()
    steps = {
        "fold_bn": fold_bn.run,
        "maxpool_or": lambda x: maxpool_graded.run(maxpool_or.run(x)),  # spikes: OR; graded values: ReLU chain
        "residual_streams": (residual_streams if ssa_form == "binary" else sdt_relays if
                             g.metadata.get("architecture") == ir.ARCHITECTURE_SDT else residual_graded).run,
        "ssa": lambda x: (ssa_binary if ssa_form == "binary" else ssa_graded).run(x, ssa_order),
        "head_readout": lambda x: head_readout.run(x, memo),
    }
    done = []
    for name in PIPELINE:
        g = steps[name](g)
        done.append(name)
        if name == upto:
            break
    g.metadata["passes"] = done
    leftover = g.of_type(*ir.HIGH_LEVEL_TYPES)
    if upto is None and leftover:
        raise ir.IRValidationError(f"lowering left high-level nodes: {[n.name for n in leftover][:5]}")
    g.validate()
    return g
