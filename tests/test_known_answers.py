"""Counters against answers known without them (issue 23): differences injected on purpose must be counted
exactly, in the right layer, by spk-parity's mismatch counter; every other test of these counters expects 0,
which a counter that never counts would also give."""
from __future__ import annotations

import torch

from analysis.parity import run_parity, summarize
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from sim.engine import Engine

from .helpers_models import randomized_model


def _flipping_runner(graph, flips: dict, bump_logit_of: int | None = None):
    """The float engine, with `flips[layer] = k`: the first k entries of that layer's record flipped (0 <-> 1)
    in the first batch; `bump_logit_of`: that sample's smallest logit raised above its largest (its prediction
    changes) in the first batch."""
    engine = Engine(graph, numeric="float")
    batches = []

    def runner(images, names):
        out = engine.run(images.double(), record=names)
        logits = out.outputs["output"].reshape(images.shape[0], -1).clone()
        recs = {n: out.records[n].clone() for n in names}
        if not batches:
            for layer, k in flips.items():
                flat = recs[layer].reshape(-1)
                flat[:k] = 1 - flat[:k]
            if bump_logit_of is not None:
                row = logits[bump_logit_of]
                row[row.argmin()] = row.max() + 1.0
        batches.append(len(images))
        return logits, recs

    return runner


def test_k_flipped_spikes_are_k_mismatches_in_their_layer():
    model = randomized_model("digits-2-64", seed=5, attn_drive=1.0).double()
    g = lower(spikformer_to_ir(model))
    x = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.zeros(10, dtype=torch.long)
    flips = {"block.0.mlp.fc1_lif": 7, "patch_embed.proj_lif2": 1}
    res = run_parity(model, g, x, y, "float", batch_size=4, progress=False,
                     sim_runner=_flipping_runner(g, flips, bump_logit_of=2))
    s = summarize(res, {})
    by_layer = {d["layer"]: d for d in s["layers"]}
    for name, d in by_layer.items():
        assert d["mismatches"] == flips.get(name, 0), name
    # entries compared, by hand: T steps x 10 samples x (channels x positions) of each layer of digits-2-64
    # (D = 64: fc1 has 4 D = 256 channels over 4 x 4 tokens; SPS stage 2 has D / 2 = 32 channels at 16 x 16,
    # its max-pool comes after the LIF)
    elements = {"block.0.mlp.fc1_lif": 4 * 10 * 256 * 16, "patch_embed.proj_lif2": 4 * 10 * 32 * 256}
    for name, k in flips.items():
        assert by_layer[name]["elements"] == elements[name]
        assert by_layer[name]["agreement"] == 1 - k / elements[name]
    o = s["overall"]
    assert o["samples"] == 10 and o["total_spike_mismatches"] == 8
    assert o["prediction_agreement"] == 0.9  # one of ten predictions changed
    clean = summarize(run_parity(model, g, x, y, "float", batch_size=4, progress=False,
                                 sim_runner=_flipping_runner(g, {})), {})
    assert clean["overall"]["total_spike_mismatches"] == 0 and clean["overall"]["prediction_agreement"] == 1.0


def _hand_conv_graph():
    """Input (1, 4, 4) -> Conv2d 2 x 3x3, padding 1, every weight 1 but channel 0's top-left tap (0) -> LIF."""
    import numpy as np

    from convert import ir
    w = np.ones((2, 1, 3, 3))
    w[0, 0, 0, 0] = 0.0
    g = ir.Graph(metadata={"T": 2})
    g.add(ir.Input("input", "input", shape=(1, 4, 4)))
    g.add(ir.Conv2d("conv", "conv", weight=w, bias=None, stride=(1, 1), padding=(1, 1)), "input")
    g.add(ir.LIF("lif", "lif"), "conv")
    g.add(ir.Output("output", "lif"), "lif")
    g.validate()
    return g


def test_a_hand_sized_conv_has_the_synaptic_operations_counted_by_hand():
    """Spikes at the corner (0, 0) and the centre (1, 1) at step 0, at (1, 1) again at step 1. By hand: an input
    position reaches the outputs whose 3x3 window covers it, 2 x 2 from a corner and 3 x 3 from (1, 1), in each of
    2 channels: 8 + 18 + 18 = 44 connections used; the zero tap (channel 0, top-left) is the one through which
    the corner reaches output (1, 1) and the centre reaches output (2, 2), so 7 + 17 + 17 = 41 effective ACs and
    no MAC; the LIF: 2 x 4 x 4 neurons x 2 steps = 64 updates, as many spikes as its record holds."""
    from analysis.activity import count_activity
    g = _hand_conv_graph()
    x = torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64)  # [steps, samples, C, H, W]
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 1, 1] = x[1, 0, 0, 1, 1] = 1.0
    lif = torch.zeros(2, 1, 2, 4, 4, dtype=torch.float64)
    lif[1, 0, 1, 2, 3] = 1.0  # one spike, any place: spikes are counted from the record
    act = count_activity(g, {"input": x, "lif": lif})
    conv = act.synapses["conv"]
    assert (conv.events, conv.synaptic_events, conv.effective_ops) == (3, 44, 41)
    assert (conv.ac_ops, conv.mac_ops) == (41, 0)
    # dense: every connection at every step; per channel the 16 outputs' windows cover 4 (corners), 6 (edges) or
    # 9 (centre) inputs: 4 x 4 + 8 x 6 + 4 x 9 = 100, x 2 channels x 2 steps x 1 sample
    assert conv.connections == 200 and conv.dense_ops == 400
    n = act.neurons["lif"]
    assert (n.updates, n.spikes) == (64, 1)


def test_an_analog_input_costs_macs_and_its_value_ops_by_hand():
    """The same conv fed the value 0.5 at the centre at both steps: one stream of analog values, so its 2 x 17
    effective operations are MACs, not ACs."""
    from analysis.activity import count_activity
    g = _hand_conv_graph()
    x = torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64)
    x[:, 0, 0, 1, 1] = 0.5
    act = count_activity(g, {"input": x, "lif": torch.zeros(2, 1, 2, 4, 4, dtype=torch.float64)})
    conv = act.synapses["conv"]
    assert (conv.events, conv.effective_ops, conv.ac_ops, conv.mac_ops) == (2, 34, 0, 34)


def test_the_hand_sized_convs_energy_by_hand():
    """Under a model with every cost set (numbers chosen here), the event-based energy per sample of the hand-sized
    conv is 41 ACs x 0.5 pJ + 0 MACs + its LIF's updates and spike: the counter's active updates, the rest at the
    inactive cost, 1 spike x 7 pJ."""
    from analysis.activity import count_activity
    from analysis.energy import event_energy
    from analysis.energy_models import EnergyModel
    model = EnergyModel(name="hand", mac_pj=3.0, ac_pj=0.5, neuron_update_inactive_pj=1.0,
                        neuron_update_active_pj=2.0, spike_pj=7.0)
    g = _hand_conv_graph()
    x = torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 1, 1] = x[1, 0, 0, 1, 1] = 1.0
    lif = torch.zeros(2, 1, 2, 4, 4, dtype=torch.float64)
    lif[1, 0, 1, 2, 3] = 1.0
    act = count_activity(g, {"input": x, "lif": lif})
    # active updates, from the definition: a LIF neuron's update is active where its input (the conv's output,
    # computed here by torch's conv2d) is non-zero or it spikes
    w = torch.from_numpy(g.nodes["conv"].weight)
    drive = torch.nn.functional.conv2d(x.reshape(2, 1, 4, 4), w, padding=1)  # [steps, 2, 4, 4]
    active = int(((drive != 0) | (lif.reshape(2, 2, 4, 4) != 0)).sum())
    assert act.neurons["lif"].active_updates == active
    e = event_energy(act, model)["total"]
    assert e["synaptic_pj"] == 41 * 0.5
    assert e["neuron_pj"] == active * 2.0 + (64 - active) * 1.0
    assert e["spike_pj"] == 7.0
    assert e["total_pj"] == 41 * 0.5 + active * 2.0 + (64 - active) * 1.0 + 7.0
