"""The SSA decomposition alone, against the product it replaces, on random spikes, both orders, several N, d."""
import pytest
import torch

from convert import ir
from convert.passes import ssa_binary, ssa_graded
from sim.engine import Engine


def _ssa_graph(h, d, n, order):
    g = ir.Graph(metadata={"T": 1})
    g.add(ir.Input("x", shape=(3 * h * d, n)))
    for i, name in enumerate("qkv"):  # slice q, k, v out of one input with AxisSynapse-free Conv1d selectors
        w = torch.zeros(h * d, 3 * h * d, 1, dtype=torch.float64)
        w[torch.arange(h * d), i * h * d + torch.arange(h * d), 0] = 1
        g.add(ir.Conv1d(name, weight=w.numpy()), "x")
    g.add(ir.SSAProduct("ssa", num_heads=h, scale=0.125, product_order=order))
    for name in "qkv":
        g.connect(name, "ssa", name)
    g.add(ir.Output("out"), "ssa")
    return g


@pytest.mark.parametrize("form", [ssa_binary, ssa_graded])
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
@pytest.mark.parametrize("h,d,n,rate", [(1, 4, 5, 0.5), (2, 8, 16, 0.3), (4, 16, 16, 0.9), (3, 5, 33, 0.7),
                                        (2, 3, 64, 1.0)])
def test_ssa_lowering_equals_product(form, order, h, d, n, rate):
    torch.manual_seed(h * 1000 + d * 10 + n)
    x = (torch.rand(7, 3 * h * d, n) < rate).double()
    g = _ssa_graph(h, d, n, order)
    want = Engine(g).run(x).outputs["out"]
    lowered = form.run(g.copy(), order)
    assert not lowered.of_type(ir.SSAProduct)
    got = Engine(lowered).run(x).outputs["out"]
    assert torch.equal(got, want)
    assert want.abs().sum() > 0


def test_bit_count_covers_max_integer():
    assert ssa_binary.num_bits(16) == 5 and ssa_binary.num_bits(15) == 4 and ssa_binary.num_bits(64) == 7


def test_auto_order_is_cheaper_and_both_costs_recorded():
    best, costs = ssa_binary.choose_order(12, 32, 64)
    assert best == "kv_first"
    assert costs["kv_first"]["neurons"] < costs["qk_first"]["neurons"]
    # closed forms of docs/ssa_decompositions.md, section 5 (AND neurons + bit neurons + second AND neurons)
    h, d, n = 12, 32, 64
    assert costs["kv_first"]["neurons"] == h * (n * d * d + d * d * 7 + n * d * d * 7)
    assert costs["qk_first"]["neurons"] == h * (n * n * d + n * n * 6 + n * n * d * 6)


def test_graded_cost_matches_closed_form():
    h, d, n = 12, 32, 64
    c = ssa_graded.cost("kv_first", h, d, n)
    assert c["neurons"] == h * (n * d * d + d * d + n * d * d)
