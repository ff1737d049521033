"""Placement on Loihi cores (hw_backends/loihi/placement.py): every per-core count checked against a brute-force
count over the explicit connectivity (each synapse node run on unit vectors), every limit binding somewhere, an
unplaceable population as a typed error, both hardware profiles, --hw on the CLI, and the spikes crossing chips
against a brute-force count on a tiny model."""
import copy
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch

from analysis.activity import ActivityCounter, needed_records
from commands import convert as convert_cli
from commands import report as report_cli
from convert import ir, kernels
from convert.options import ConversionOptions
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hardware.loihi import limits
from hw_backends.loihi.crossings import chip_crossings
from hw_backends.loihi.compile import compile_graph
from hw_backends.loihi import placement
from hw_backends.loihi.placement import LIMIT_NAMES, place, tile_usage
from hardware.loihi.profiles import LOIHI1, PROFILES, get_profile
from hw_backends.loihi.quantize import quantize
from hw_backends.loihi.resources import map_resources
from hw_backends.loihi.timing import Projection, insert_delay_relays, projections, schedule
from sim.engine import Engine

from .helpers_models import TINY, randomized_model, tiny_checkpoint

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------------ brute force
def weights_of(node: ir.Node, in_shape: tuple) -> np.ndarray:
    """The synapse node's weight matrix [out, in] (flat), from its float kernel run on every unit vector."""
    n = math.prod(in_shape)
    x = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    y = kernels.step(node, {"in": x}, {}, kernels.ParamCache(), 0)
    return y.reshape(n, -1).T.numpy()


def synapse_bits(n: int, w: int, p) -> int:
    """nengo-loihi's SynapseConfig.bits_per_axon, written out: blocks of 64, a 10-bit header, 64-bit words."""
    bits = 0
    for i in range(0, n, p.synapses_per_block):
        k = min(n - i, p.synapses_per_block)
        bits += -(-(k * w + p.block_header_bits) // p.memory_word_bits) * p.memory_word_bits
    return bits


def tiles_of(shape, ext):
    idx = np.arange(math.prod(shape)).reshape(shape)
    for corner in itertools.product(*[range(0, s, t) for s, t in zip(shape, ext)]):
        yield idx[tuple(slice(c, c + t) for c, t in zip(corner, ext))].ravel()


def brute_force(g: ir.Graph, projs: list[Projection], profile, tiles: dict) -> dict:
    """Per population and tile extents: worst compartments / input axons / synapse bits, their totals, and the
    output axons of every tile, counted from the explicit weight matrices."""
    shapes = g.shapes()
    W = {p.synapse: weights_of(g.nodes[p.synapse], shapes[g.in_edges(p.synapse)[0].src]) for p in projs}

    def population(p):  # the axon format the placement gives groups-1 convolutions
        n = g.nodes[p.synapse]
        return isinstance(n, (ir.Conv2d, ir.Conv1d)) and n.groups == 1

    def positions(p):  # spatial position of every input index (population axons carry the channel as an atom)
        shp = shapes[g.in_edges(p.synapse)[0].src]
        return np.arange(math.prod(shp)) % math.prod(shp[1:])

    def exp_groups(p, post):
        e = np.asarray(g.nodes[p.synapse].weight_exp)
        ch = np.arange(math.prod(shapes[post])) // math.prod(shapes[post][1:])
        return np.broadcast_to(e, (shapes[post][0],))[ch] if e.ndim else np.zeros(len(ch), int)

    def key(p):
        n = g.nodes[p.synapse]
        geo = (n.kind, getattr(n, "kernel", None), getattr(n, "stride", None), getattr(n, "groups", None),
               np.shape(getattr(n, "weight", 0)))
        shared = (p.pre, p.delay, population(p), geo)
        return shared if profile.synapse_groups_share_axons else shared + (p.synapse,)

    def axon_masks(p, post, T):  # the inputs of each axon set p uses on the core holding T: one per format
        Wt = W[p.synapse][T]
        if profile.synapse_groups_share_axons:
            return [Wt.any(0)]
        groups = exp_groups(p, post)[T]
        return [Wt[groups == gval].any(0) for gval in np.unique(groups)]

    out = {}
    for name, ext in tiles.items():
        into = [p for p in projs if p.post == name]
        worst = {k: 0 for k in ("compartments", "input_axons", "synapse_bits")}
        totals = {"input_axons": 0, "synapse_bits": 0, "synapses": 0}
        for T in tiles_of(shapes[name], ext):
            idx_bits = max(profile.index_bits_min, math.ceil(math.log2(max(len(T), 2))))
            axons = 0
            for k in {key(p) for p in into}:
                p = next(q for q in into if key(q) == k)
                for mask in axon_masks(p, name, T):
                    reached = np.flatnonzero(mask)
                    axons += len(np.unique(positions(p)[reached])) if population(p) else len(reached)
            bits = syn = 0
            for p in into:
                w_bits = profile.weight_bits + p.delay.bit_length() + idx_bits
                Wt = W[p.synapse][T]
                syn += int((Wt != 0).sum())
                groups = exp_groups(p, name)[T]
                for gval in np.unique(groups):
                    Wg = Wt[groups == gval]
                    if population(p):  # one weight set per distinct (atom, relative target, weight) pattern
                        pos, sets = positions(p), {}
                        for q in np.unique(pos[Wg.any(0)]):
                            cols = np.flatnonzero(pos == q)
                            r, c = np.nonzero(Wg[:, cols])
                            base = r.min()
                            sets[tuple(sorted(zip(c, r - base, Wg[r, cols[c]])))] = len(r)
                        bits += sum(synapse_bits(n, w_bits, profile) for n in sets.values())
                    else:
                        n_per_axon = (Wg != 0).sum(0)
                        bits += sum(synapse_bits(int(n), w_bits, profile) for n in n_per_axon[n_per_axon > 0])
            for k, v in (("compartments", len(T)), ("input_axons", axons), ("synapse_bits", bits)):
                worst[k] = max(worst[k], v)
            totals["input_axons"] += axons
            totals["synapse_bits"] += bits
            totals["synapses"] += syn
        per_tile = []
        for S in tiles_of(shapes[name], ext):
            n_out = 0
            for post in {p.post for p in projs if p.pre == name}:
                for k in {key(p) for p in projs if p.pre == name and p.post == post}:
                    p = next(q for q in projs if q.pre == name and q.post == post and key(q) == k)
                    for T in tiles_of(shapes[post], tiles[post]):
                        for mask in axon_masks(p, post, T):
                            reached = np.intersect1d(np.flatnonzero(mask), S)
                            if population(p):
                                n_out += profile.population_axon_slots * len(np.unique(positions(p)[reached]))
                            else:
                                n_out += len(reached)
            per_tile.append(n_out)
        out[name] = {"worst": worst, "totals": totals, "output_axons": per_tile}
    return out


# ------------------------------------------------------------------------------------------------ a small graph
def small_graph() -> tuple[ir.Graph, list[Projection]]:
    """Every synapse kind of the lowered networks, with border effects, strides, groups, per-channel exponents,
    two synapse groups that may share axons (a 16-bit weight's parts), a delay, a token-invariant readout and the SSA's
    broadcast and sum synapses in both product orders."""
    def w(*shape):
        return RNG.uniform(0.5, 1.5, shape) * RNG.choice([-1, 1], shape)

    g = ir.Graph()
    g.add(ir.Input("input", shape=(2, 6, 5)))
    g.add(ir.Conv2d("conv_a", weight=w(3, 2, 3, 3), padding=(1, 1), weight_exp=np.array([0, 1, 0])), "input")
    g.add(ir.LoihiLIF("A"), "conv_a")
    g.add(ir.SumPool2d("pool", kernel=(3, 3), stride=(2, 2), padding=(1, 1)), "A")
    g.add(ir.LoihiLIF("B"), "pool")
    g.add(ir.Conv2d("conv_b", weight=w(2, 3, 3, 2), stride=(2, 1), padding=(1, 0)), "A")
    g.add(ir.LoihiLIF("E"), "conv_b")
    g.add(ir.Conv2d("depthwise", weight=w(2, 1, 1, 1), groups=2), "E")
    g.add(ir.LoihiLIF("F"), "depthwise")
    g.add(ir.Flatten("B.tokens"), "B")
    g.add(ir.Conv1d("lin", weight=w(4, 3, 1), weight_exp=np.array([0, 0, 1, 1])), "B.tokens")
    g.add(ir.Conv1d("lin.low", weight=w(4, 3, 1), weight_exp=-7), "B.tokens")
    g.add(ir.LoihiLIF("C"), "lin", "lin.low")
    head = np.repeat(w(2, 4, 1), 9, axis=2)  # the same weight for every token: one shared weight set
    g.add(ir.Conv1d("head", weight=head), "C")
    g.add(ir.LoihiLIF("H", readout=True), "head")
    sizes = {"h": 2, "c": 2, "e": 3, "i": 9, "j": 9, "one": 1}
    g.add(ir.AxisSynapse("and.from_c", in_axes=("h", "c", "j"), out_axes=("h", "c", "e", "j"), sizes=sizes), "C")
    g.add(ir.LoihiLIF("D"), "and.from_c")
    g.add(ir.AxisSynapse("count", in_axes=("h", "c", "e", "j"), out_axes=("h", "c", "e", "one"), sizes=sizes), "D")
    g.add(ir.LoihiLIF("G"), "count")
    g.add(ir.AxisSynapse("qk", in_axes=("h", "c", "j"), out_axes=("h", "c", "j", "i"), sizes=sizes), "C")
    g.add(ir.LoihiLIF("Q"), "qk")
    g.add(ir.AxisSynapse("sum_c", in_axes=("h", "c", "j", "i"), out_axes=("h", "j", "i"), sizes=sizes), "Q")
    g.add(ir.LoihiLIF("S"), "sum_c")
    g.add(ir.Output("output"), "H")
    delays = {"count": 5, "head": 6}
    projs = [dataclasses.replace(p, delay=delays.get(p.synapse, 0)) for p in projections(g)]
    return g, projs


TILES = {"A": (2, 4, 2), "B": (3, 2, 3), "E": (1, 2, 2), "F": (2, 3, 1), "C": (3, 4), "H": (2, 1), "D": (5, 4),
         "G": (7, 1), "Q": (10, 5), "S": (4, 81)}


def test_per_core_counts_match_brute_force():
    g, projs = small_graph()
    for profile in (LOIHI1, get_profile("loihi2")):
        ours = tile_usage(g, projs, profile, TILES)
        ref = brute_force(g, projs, profile, TILES)
        for name in TILES:
            assert {k: ours[name]["worst"][k] for k in ref[name]["worst"]} == ref[name]["worst"], name
            assert ours[name]["totals"]["synapses"] == ref[name]["totals"]["synapses"], name
            assert ours[name]["totals"]["input_axons"] == ref[name]["totals"]["input_axons"], name
            assert ours[name]["totals"]["synapse_bits"] == ref[name]["totals"]["synapse_bits"], name
            assert ours[name]["output_axons_per_tile"].ravel().tolist() == ref[name]["output_axons"], name


def test_the_searchs_output_axon_max_and_sum_match_brute_force(monkeypatch):
    """The placement search reads each probe's output axons as a max and a sum taken over blocks of channel tiles
    (placement.SenderLoad.worst_and_total); any block size, and one neuron per tile, give the brute force's."""
    g, projs = small_graph()
    profile = get_profile("loihi2")
    shapes = g.shapes()
    into = placement._incoming(g, projs, shapes, profile)
    for block in (1, 3, placement.TILE_BLOCK):
        monkeypatch.setattr(placement, "TILE_BLOCK", block)
        for name, ext in TILES.items():
            for own in (ext, (1,) * len(ext)):
                tiles = dict(TILES, **{name: own})
                want = brute_force(g, projs, profile, tiles)[name]["output_axons"]
                sender = placement._sender_load(name, shapes[name], into, tiles, profile)
                assert sender.worst_and_total(tuple(own)) == (max(want), sum(want)), (name, own, block)


def test_a_weights_parts_share_axons_only_where_the_profile_says_so():
    """loihi1 gives the low part of a 16-bit weight, and each exponent group of a synapse on a core, its own axons
    (nengo-loihi's rule: one synapse format per Synapse); a profile that lets synapse groups share axons counts
    their common axons once, on the receiving and on the sending core."""
    g, projs = small_graph()
    shared = dataclasses.replace(LOIHI1, synapse_groups_share_axons=True)
    lin = [p for p in projs if p.synapse == "lin"]  # exponents [0, 0, 1, 1]: both groups on C's first tile
    low = [p for p in projs if p.synapse == "lin.low"]

    def c_axons(ps, profile):
        return tile_usage(g, ps, profile, {"C": TILES["C"]})["C"]["totals"]["input_axons"]

    assert c_axons(lin + low, shared) == c_axons(lin, shared) == c_axons(low, shared) > 0
    assert c_axons(lin + low, LOIHI1) == c_axons(lin, LOIHI1) + c_axons(low, LOIHI1)
    assert c_axons(lin, LOIHI1) > c_axons(lin, shared)
    own, one = tile_usage(g, projs, LOIHI1, TILES), tile_usage(g, projs, shared, TILES)
    assert own["B"]["output_axons_per_tile"].sum() > one["B"]["output_axons_per_tile"].sum()


def test_placement_obeys_every_limit_and_each_limit_binds_somewhere():
    g, projs = small_graph()
    big = dataclasses.replace(LOIHI1, neurons_per_core=10 ** 6, synapse_memory_bits_per_core=10 ** 9,
                              input_axons_per_core=10 ** 6, output_axons_per_core=10 ** 6)
    whole = tile_usage(g, projs, big, {n: g.shapes()[n] for n in TILES})  # every population on one core
    field = {"compartments": "neurons_per_core", "synapse_bits": "synapse_memory_bits_per_core",
             "input_axons": "input_axons_per_core", "output_axons": "output_axons_per_core"}
    for limit in LIMIT_NAMES:  # the limit just below what the neediest population needs on one core
        pop = max(whole, key=lambda n: whole[n]["worst"][limit])
        profile = dataclasses.replace(big, **{field[limit]: whole[pop]["worst"][limit] - 1})
        placed = place(g, projs, profile)
        assert placed[pop]["binding"] == limit and placed[pop]["cores"] > 1, (limit, placed[pop])
        for name, r in placed.items():
            for k in LIMIT_NAMES:
                assert r["worst_core"][k]["used"] <= r["worst_core"][k]["allowed"], (limit, name, k)
        check = tile_usage(g, projs, profile, {k: v["tile"] for k, v in placed.items()})
        assert all(check[n]["worst"][k] == placed[n]["worst_core"][k]["used"] for n in placed for k in LIMIT_NAMES)


def test_unplaceable_population_is_a_typed_error_naming_it():
    g, projs = small_graph()
    tiny_memory = dataclasses.replace(LOIHI1, synapse_memory_bits_per_core=100)
    with pytest.raises(limits.LoihiLimitError) as e:
        place(g, projs, tiny_memory)
    err = e.value
    assert err.node in g.nodes and "synapse memory" in err.limit and err.used > err.allowed == 100
    assert f"uses {err.used}, allowed 100" in str(err) and err.node in str(err)


def test_both_profiles_place_a_preset_within_every_limit():
    model = randomized_model("digits-2-64", seed=1).double()
    lowered = lower(spikformer_to_ir(model), ssa_form="graded")
    compiled = {name: compile_graph(lowered, profile=name) for name in PROFILES}
    for name, b in compiled.items():
        res = json.loads(json.dumps(b.resources))
        assert res["profile"]["name"] == name
        assert res["total"]["cores"] == sum(r["cores"] for r in res["populations"].values())
        assert res["total"]["chips"] == -(-res["total"]["cores"] // PROFILES[name].cores_per_chip)
        assert res["total"]["pipeline_latency_steps"] == b.schedule["max_depth"]
        for r in res["populations"].values():
            assert all(r["worst_core"][k]["used"] <= r["worst_core"][k]["allowed"] for k in LIMIT_NAMES)
            assert r["binding"] in LIMIT_NAMES + ("none",)
    assert compiled["loihi1"].resources["total"]["cores"] > compiled["loihi2"].resources["total"]["cores"]
    again = map_resources(compiled["loihi1"].graph, compiled["loihi1"].schedule["projections"], "loihi1")
    assert again["total"] == {**compiled["loihi1"].resources["total"], "pipeline_latency_steps": None}


def test_auto_ssa_skips_a_form_that_cannot_be_placed(monkeypatch):
    from hw_backends.base import get_backend
    from hardware.loihi import profiles
    frontend = spikformer_to_ir(randomized_model("digits-2-64", seed=4, **TINY).double())
    backend = get_backend("loihi")
    for name, in_axons in (("tight", 24), ("tighter", 16)):  # the binary form's readout needs more input axons
        monkeypatch.setitem(profiles.PROFILES, name, dataclasses.replace(LOIHI1, name=name,
                                                                         input_axons_per_core=in_axons))
    b = backend.compile(frontend, ConversionOptions(target="loihi", hw="tight"))
    assert b.ssa_form == "graded" and "input axons" in b.ssa_forms["by_form"]["binary"]["unplaceable"]
    with pytest.raises(limits.LoihiLimitError, match="input axons per core on tight"):
        backend.compile(frontend, ConversionOptions(target="loihi", hw="tight", ssa="binary"))
    with pytest.raises(limits.LoihiLimitError, match="the binary form fails too"):
        backend.compile(frontend, ConversionOptions(target="loihi", hw="tighter"))


def test_a_producers_fan_out_is_repaired_by_recutting_its_consumers(monkeypatch):
    """With 40 output axons per core a neuron of the binary form feeds more consumer cores than one core can
    address when every consumer is cut for its fewest cores; the placement re-cuts those consumers under a cap
    on that producer's fan-out and then obeys every limit, the caps recorded; with the repair disabled (one
    placement pass) the same network cannot be placed."""
    from hw_backends.loihi import placement
    g = lower(spikformer_to_ir(randomized_model("digits-2-64", seed=4, **TINY).double()), ssa_form="binary")
    q, _ = quantize(g, weight_bits=16)
    insert_delay_relays(q)
    projs = schedule(q)["projections"]
    profile = dataclasses.replace(LOIHI1, output_axons_per_core=40, synapse_groups_share_axons=True)
    placed = place(q, projs, profile)
    capped = {n: r["fan_out_caps"] for n, r in placed.items() if "fan_out_caps" in r}
    assert capped
    check = tile_usage(q, projs, profile, {n: r["tile"] for n, r in placed.items()})
    for name, r in placed.items():
        for k in LIMIT_NAMES:
            assert check[name]["worst"][k] == r["worst_core"][k]["used"] <= r["worst_core"][k]["allowed"], (name, k)
    into = placement._incoming(q, projs, q.shapes(), profile)
    met = 0
    for consumer, caps in capped.items():
        for producer, c in caps.items():
            assert placement.fan_out(into[consumer], producer, placed[consumer]["tile"], profile) == c["used"]
            met += c["used"] <= c["cap"]
    assert met
    from hw_backends.loihi.export import _placement_lines
    summary = "\n".join(_placement_lines(map_resources(q, projs, profile)))
    assert "; re-cut for " in summary and "(fan-out " in summary
    monkeypatch.setattr(placement, "FAN_OUT_PASSES", 1)
    with pytest.raises(limits.LoihiLimitError, match="output axons per core"):
        place(q, projs, profile)


def test_every_profile_figure_has_a_source_and_a_status():
    for p in PROFILES.values():
        numeric = [f.name for f in dataclasses.fields(p) if isinstance(getattr(p, f.name), (int, bool))]
        assert set(numeric) <= set(p.sources), (p.name, set(numeric) - set(p.sources))
        for fig in p.sources.values():
            assert fig.status in ("sourced", "derived", "assumption") and fig.source
            assert fig.status != "assumption" or fig.note  # an assumption states its reason and effect
    with pytest.raises(ValueError, match="loihi1, loihi2"):
        get_profile("loihi3")


def test_hw_option_on_the_cli(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    for hw in ("loihi1", "loihi2"):
        out = tmp_path / hw
        assert convert_cli.main([str(ckpt), "--target", "loihi", "--hw", hw, "-o", str(out)]) == 0
        res = json.loads((out / "resources.json").read_text())
        assert res["profile"]["name"] == hw and set(res["other_profiles"]) == set(PROFILES) - {hw}
        assert json.loads((out / "manifest.json").read_text())["options"]["hw"] == hw
        assert f"Placement on {hw}" in (out / "summary.md").read_text()
    assert "(chosen, on loihi1)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        convert_cli.main([str(ckpt), "--target", "loihi", "--hw", "loihi3", "-o", str(tmp_path / "x")])
    rep_dir = tmp_path / "report"
    assert report_cli.main([str(ckpt), "--target", "loihi", "--hw", "loihi1", "--data", "digits", "--samples", "3",
                            "--no-progress", "-o", str(rep_dir)]) == 0
    placed = json.loads((rep_dir / "energy.json").read_text())["loihi_placement"]
    resources = json.loads((tmp_path / "loihi1" / "resources.json").read_text())
    assert placed["profile"] == "loihi1" and placed["cores"] == resources["total"]["cores"]
    assert placed["pipeline_latency_steps"] == resources["total"]["pipeline_latency_steps"]
    assert placed["chip_crossings"]["host_to_chips_per_step"] > 0
    assert "Loihi placement (loihi1)" in (rep_dir / "energy.md").read_text()


def test_chip_crossings_match_brute_force():
    model = randomized_model("digits-2-64", seed=4, attn_drive=1.0, **TINY).double()
    few_cores = dataclasses.replace(LOIHI1, cores_per_chip=3, neurons_per_core=64)
    b = compile_graph(lower(spikformer_to_ir(model), ssa_form="graded"), profile=few_cores)
    g, res = b.graph, b.resources
    assert res["total"]["chips"] > 3
    x = torch.rand(3, 1, TINY["img_size"], TINY["img_size"])
    recs = Engine(g, "loihi_fixed").run(x, record=needed_records(g)).records
    act = ActivityCounter(g, per_neuron=True)(recs)
    for name, n in act.neurons.items():
        if name in act.spike_counts:
            assert int(act.spike_counts[name].sum()) == n.spikes
    ours = chip_crossings(g, b.schedule["projections"], res, act.spike_counts, act.samples, act.steps)

    shapes = g.shapes()
    cpc = few_cores.cores_per_chip

    def chips(name):  # chip of every neuron of a placed population, from its tiles
        r = res["populations"][name]
        chip = np.zeros(math.prod(r["shape"]), int)
        for k, T in enumerate(tiles_of(r["shape"], r["tile"])):
            chip[T] = (r["first_core"] + k) // cpc
        return chip

    expect = {}
    for p in b.schedule["projections"]:
        node = copy.copy(g.nodes[p.synapse])
        node.weight = np.ones_like(node.weight) if isinstance(node.weight, np.ndarray) else 1.0  # structure
        W = weights_of(node, shapes[g.in_edges(p.synapse)[0].src]) != 0
        reach = expect.setdefault((p.pre, p.post), np.zeros((W.shape[1], res["total"]["chips"]), bool))
        post_chip = chips(p.post)
        for c in np.unique(post_chip):
            reach[:, c] |= W[post_chip == c].any(0)
    rows = {(r["pre"], r["post"]): r for r in ours["projections"]}
    assert set(rows) == set(expect)
    crossed = 0
    for (pre, post), reach in expect.items():
        own = chips(pre) if pre in res["populations"] else np.full(reach.shape[0], -1)
        foreign = reach.sum(1) - reach[np.arange(len(own)), np.maximum(own, 0)] * (own >= 0)
        n = int(np.dot(act.spike_counts[pre], foreign))
        assert rows[(pre, post)]["crossing_spikes"] == n, (pre, post)
        crossed += n * (pre in res["populations"])
    assert crossed > 0 and ours["between_chips_per_step"] == crossed / (act.samples * act.steps)


def test_placement_error_names_what_to_try():
    """A population that fits no core: the error suggests 8-bit weights and the other profile; other limit errors
    get no such hint."""
    from convert.options import ConversionOptions
    from hardware.loihi.limits import LoihiLimitError
    from hardware.loihi.profiles import get_profile
    from hw_backends.loihi.compile import placement_hint
    e = LoihiLimitError("patch_embed.maxpool3", "output axons per core on loihi2 (one neuron per core)", 4622, 4096)
    hint = placement_hint(e, ConversionOptions(target="loihi", weight_bits=16), get_profile("loihi2"))
    assert "--weight-bits 8" in hint and "--hw loihi1" in hint
    assert "--weight-bits" not in placement_hint(e, ConversionOptions(target="loihi", weight_bits=8),
                                                  get_profile("loihi2"))
    other = LoihiLimitError("x", "bias exponent (3 bit)", 9, 7)
    assert placement_hint(other, ConversionOptions(target="loihi"), get_profile("loihi2")) == ""
    full = LoihiLimitError(e.node, e.limit, e.used, e.allowed, hint)
    assert str(full).endswith(hint) and "uses 4622, allowed 4096" in str(full)
