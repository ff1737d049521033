"""Max-pool over spikes is OR: a sum-pool followed by a threshold at 0.5. Exact for 0/1 inputs (zero padding
equals max-pool's -inf padding because every window holds at least one real input). The threshold neuron keeps
the max-pool's name, so the layer keeps one name in every record. A max-pool over graded values (one input that
is not spikes) is left to maxpool_graded."""
from __future__ import annotations

from .. import ir


class NonSpikingMaxPoolError(ValueError):
    pass


def run(g: ir.Graph) -> ir.Graph:
    for mp in g.of_type(ir.MaxPool2d):
        srcs = g.in_edges(mp.name)
        if len(srcs) == 1 and not g.nodes[srcs[0].src].spiking:
            continue  # graded values: maxpool_graded
        if not all(g.nodes[e.src].spiking for e in srcs) or len(srcs) != 1:
            raise NonSpikingMaxPoolError(f"{mp.name}: max-pool input is not a single spike stream; OR "
                                         f"lowering needs 0/1 input")
        sum_name = g.unique_name(f"{mp.name}.sum")
        g.add(ir.SumPool2d(sum_name, mp.source, kernel=mp.kernel, stride=mp.stride, padding=mp.padding),
              srcs[0].src)
        out_edges = g.out_edges(mp.name)
        g.remove(mp.name)
        g.add(ir.Threshold(mp.name, mp.source, threshold=0.5), sum_name)
        g.edges.extend(out_edges)
    return g
