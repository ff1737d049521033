"""What both sides of the Lava process boundary agree on (numpy only: neither torch nor lava): the errors, the
width of the messages a population sends (binary spikes or graded payloads, lava_graph's docstring), which
population is the readout, and the names of the populations a run can record.

The parent side (lava_matrices: weight matrices with torch; runnable: opening a network; lava_run: the run)
and the Lava side (lava_graph: the process graph; lava_worker: the isolated run) both import this module, never
each other.
"""
from __future__ import annotations

from convert import ir

from hardware.loihi import limits as L

INPUT_MESSAGE_BITS = L.GRADED_PAYLOAD_BITS  # the image: graded payload round(x * input_payload_scale)
GRADED_MESSAGE_BITS = 24    # GradedVec / ProdNeuron s_out: int32 with precision 24 (signed 24-bit payloads)


class LavaGraphError(ValueError):
    pass


class LavaRunError(RuntimeError):
    pass


class LavaTimeoutError(LavaRunError):
    def __init__(self, msg: str, pgid: int | None = None):
        super().__init__(msg)
        self.pgid = pgid  # the killed process group (the worker and every Lava process it forked)


def message_bits(node, graph: ir.Graph | None = None) -> int:
    """num_message_bits of a Sparse whose pre is `node`: 0 for binary spikes, > 0 for graded payloads (the input:
    graded, except binary event frames, metadata "input_binary")."""
    if isinstance(node, ir.Input):
        return 0 if graph is not None and graph.metadata.get("input_binary") else INPUT_MESSAGE_BITS
    if isinstance(node, ir.BiasSource):
        return GRADED_MESSAGE_BITS  # its payload
    return GRADED_MESSAGE_BITS if node.is_graded else 0


def readout_population(graph: ir.Graph) -> str:
    """The readout population (a non-spiking LoihiLIF read by the one Output node)."""
    outs = graph.outputs()
    if len(outs) != 1:
        raise LavaGraphError(f"expected one Output node, found {outs}")
    src = graph.in_edges(outs[0])[0].src
    if not (graph.nodes[src].is_population and graph.nodes[src].is_readout):
        raise LavaGraphError(f"output {outs[0]} does not read a readout population ({src})")
    return src


def populations(g: ir.Graph) -> list[str]:
    """The populations of the network (one Lava neuron process each), in topological order."""
    return [n for n in g.topo_order() if g.nodes[n].is_population]
