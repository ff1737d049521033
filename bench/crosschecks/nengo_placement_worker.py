"""nengo-loihi's own block splitting and core validation on layers of our networks; run inside a throwaway
venv with nengo-loihi 1.1.0 (bench/crosschecks/bench_nengo_placement.py creates it and starts this). Imports nothing from
this repository but its sibling bench/crosschecks/worker_tools.py (standard library only).

    <venv>/bin/python bench/crosschecks/nengo_placement_worker.py --cases cases.json --weights weights.npz
        [--partial out.jsonl] [--case-timeout 600]

cases.json: a list of cases; each one network built with nengo + nengo_loihi and split by nengo-loihi:
    {"id": str,
     "populations": [{"name", "shape": [C, H, W] or [C, L],
                      "tiles": null (nengo-loihi splits it itself, split_blocks.split_block)
                               | {"block_shape": [...]}      (nengo_loihi.BlockShape(shape, population shape))
                               | {"ranges": [[start, stop], ...]}   (explicit tiles of the flat neuron index)
                     }, ...],                 on-chip LIF ensembles (gain 1, bias 0)
     "inputs": [{"name", "n"}],               off-chip spiking ensembles (their spikes enter as chip input axons)
     "connections": [{"pre", "post", "weight": npz key of the integer weight [F, C, kh, kw],
                      "in_shape": [C, H, W] (the pre's neurons viewed as an image; tokens: [C, 1, L]),
                      "stride": [sy, sx], "padding": [py, px],
                      "encoding": "population" (nengo.Convolution: pop32 axons, weights shared across
                                  positions) | "discrete" (nengo.transforms.Sparse with every nonzero synapse
                                  of the same convolution: one axon per presynaptic neuron, no sharing)}]}

Prints one JSON line: {"versions", "limits" (nengo_loihi.block MAX_*), "cases": [...]}; per case and population:
the blocks (= Loihi 1 cores) nengo-loihi made, per block compartments / in axons / out axons / synapse bits as
`LoihiBlock.utilization()` computes them (Synapse.bits(), Axon.axon_slots()), the synapse formats, and whether
`nengo_loihi.builder.validate.validate_block` accepts the block (else its message). A case that fails to build
reports `error` (the exception, one line, and where it was raised).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import warnings

from worker_tools import CaseTimeout, short, where  # bench/, beside this file (standard library only)

REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr  # keep stdout for the one JSON line


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for p in ("nengo-loihi", "nengo", "numpy", "scipy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


# ------------------------------------------------------------------------------------------------ geometry
def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def nengo_padding(in_shape, kernel, stride, padding) -> str | None:
    """nengo.Convolution knows "valid" (no padding) and "same" (nengo._vendor.npconv2d's: total padding
    (out - 1) * s + k - in, split with the smaller half first). The equivalent of ours, else None."""
    _, h, w = in_shape
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    if py == 0 and px == 0:
        return "valid"
    oh, ow = conv_out(h, kh, sy, py), conv_out(w, kw, sx, px)
    if oh == -(-h // sy) and ow == -(-w // sx):  # nengo's "same" output size
        pi = max((oh - 1) * sy + kh - h, 0) // 2
        pj = max((ow - 1) * sx + kw - w, 0) // 2
        if (pi, pj) == (py, px):
            return "same"
    return None


def conv_coo(weight, in_shape, stride, padding):
    """(rows, cols, values) of every nonzero synapse of the convolution (zero padding has no synapse):
    rows index the output (F, OH, OW) row-major, cols the input (C, H, W)."""
    import numpy as np
    f_, c_, kh, kw = weight.shape
    _, h, w = in_shape
    (sy, sx), (py, px) = stride, padding
    oh, ow = conv_out(h, kh, sy, py), conv_out(w, kw, sx, px)
    rows, cols, vals = [], [], []
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    for dy in range(kh):
        for dx in range(kw):
            iy, ix = oy * sy - py + dy, ox * sx - px + dx
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            out_pos = (oy * ow + ox)[ok]
            in_pos = (iy * w + ix)[ok]
            fo, ci = np.nonzero(weight[:, :, dy, dx])
            if len(fo) == 0 or len(out_pos) == 0:
                continue
            rows.append((fo[:, None] * (oh * ow) + out_pos[None, :]).ravel())
            cols.append((ci[:, None] * (h * w) + in_pos[None, :]).ravel())
            vals.append(np.repeat(weight[fo, ci, dy, dx], len(out_pos)))
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


# ------------------------------------------------------------------------------------------------ explicit tiles
_EXPLICIT: dict = {}  # label of the unsplit block (nengo-loihi labels it str(ensemble)) -> index lists
_UNSPLIT: dict = {}   # label -> the unsplit block's utilization and the split count each limit asks for


def _install_explicit_split():
    """nengo_loihi.config.BlockShape only makes rectangular tiles; for tiles given as flat index ranges the
    block's compartment index sets are set here and the rest of nengo-loihi's split_block runs unchanged
    (the same copying of compartment parameters, the same synapse and axon splitting)."""
    from collections import OrderedDict

    from nengo_loihi.block import LoihiBlock
    from nengo_loihi.builder import split_blocks as sb

    original = sb.split_block

    def split_block(old_block, block_shapes, validate=sb.ValidationLevel.MINIMAL):
        u = {k: int(v[0]) for k, v in old_block.utilization().items()}
        lim = {k: int(v[1]) for k, v in old_block.utilization().items()}
        _UNSPLIT[old_block.label] = {"compartments": u["compartments"], "in_axons": u["in-axons"],
                                     "out_axons": u["out-axons"], "synapse_bits": u["synapses"],
                                     "splits_needed": {k.replace("-", "_").replace("synapses", "synapse_bits"):
                                                       -(-u[k] // lim[k]) for k in u}}
        tiles = _EXPLICIT.get(old_block.label)
        if tiles is None:
            return original(old_block, block_shapes, validate=validate)
        n = old_block.compartment.n_compartments
        inds = [sb.IndicesList(t) for t in tiles]
        assert sorted(i for t in inds for i in t) == list(range(n)), "tiles must cover every neuron once"
        if len(inds) == 1:
            return OrderedDict([(old_block, inds[0])])
        new_blocks = []
        for k, ii in enumerate(inds):
            nb = LoihiBlock(len(ii), label=f"{old_block.label}[{k}]")
            for attr in ("decay_u", "decay_v", "refract_delay", "vth", "bias", "enable_noise"):
                setattr(nb.compartment, attr, getattr(old_block.compartment, attr)[list(ii)].copy())
            for attr in ("tau_s", "scale_u", "scale_v", "vmin", "vmax", "noise_offset", "noise_exp",
                         "noise_at_membrane"):
                setattr(nb.compartment, attr, getattr(old_block.compartment, attr))
            new_blocks.append(nb)
        return OrderedDict(zip(new_blocks, inds))

    sb.split_block = split_block


# ------------------------------------------------------------------------------------------------ one case
def block_record(block) -> dict:
    from nengo_loihi.builder.validate import validate_block
    u = block.utilization()
    rec = {"compartments": int(u["compartments"][0]), "in_axons": int(u["in-axons"][0]),
           "out_axons": int(u["out-axons"][0]), "synapse_bits": int(u["synapses"][0]), "valid": True,
           # every limit the block exceeds (validate_block raises at the first one only)
           "over": [{"in-axons": "in_axons", "out-axons": "out_axons", "synapses": "synapse_bits"}.get(k, k)
                    for k, (used, allowed) in u.items() if used > allowed]}
    try:
        validate_block(block)
    except Exception as e:  # noqa: BLE001 - nengo-loihi's verdict is the result (BuildError / AssertionError)
        rec["valid"] = False
        rec["error"] = short(e)
    syn = []
    undeduped = 0  # synapse bits if identical discrete synapse lists were not stored once (see below)
    for s in block.synapses:
        cfg = s.synapse_cfg
        if s.pop_type == 0 and s.axon_to_weight_map is not None:
            # split_blocks.set_new_synapse_weights stores identical (weights, indices) lists of a split discrete
            # synapse once, shared through axon_to_weight_map
            undeduped += sum(cfg.bits_per_axon(s.weights[s.axon_weight_idx(a)].size) for a in range(s.n_axons)
                             if s.axon_compartment_base(a) is not None)
        else:
            undeduped += s.bits()
        syn.append({"label": str(s.label), "axons": int(s.n_axons), "bits": int(s.bits()), "pop_type": int(s.pop_type),
                    "compression": int(cfg.compression), "weight_bits": int(cfg.real_weight_bits),
                    "index_bits": int(cfg.real_idx_bits) if cfg.idx_bits >= 0 else None,
                    "delay_bits": int(cfg.delay_bits), "weight_arrays": len(s.weights),
                    "weights": int(sum(w.size for w in s.weights))})
    rec["synapses"] = syn
    rec["synapse_bits_without_dedup"] = int(undeduped)
    return rec


def summarize(blocks: list[dict]) -> dict:
    keys = ("compartments", "in_axons", "out_axons", "synapse_bits")
    out = {"blocks": len(blocks), "valid": all(b["valid"] for b in blocks)}
    for k in keys:
        vals = [b[k] for b in blocks]
        out[k] = {"max": max(vals), "min": min(vals), "total": sum(vals)}
    errs = [b["error"] for b in blocks if not b["valid"]]
    if errs:
        out["errors"] = sorted(set(errs))[:5]
        out["invalid_blocks"] = len(errs)
    over = {}
    for b in blocks:
        for k in b["over"]:
            over[k] = over.get(k, 0) + 1
    out["blocks_over"] = over  # limit -> blocks exceeding it
    out["synapse_bits_without_dedup"] = max(b["synapse_bits_without_dedup"] for b in blocks)
    fmt = {}
    for b in blocks:
        for s in b["synapses"]:
            key = (f"pop{s['pop_type']}" if s["pop_type"] else "discrete") + \
                  f" c{s['compression']} w{s['weight_bits']} i{s['index_bits']} d{s['delay_bits']}"
            fmt[key] = fmt.get(key, 0) + 1
    out["synapse_formats"] = fmt
    return out


def run_case(case: dict, weights) -> dict:
    import nengo
    import nengo_loihi
    import numpy as np
    import nengo_loihi.builder.network as nw
    from nengo_loihi.builder import Model

    t0 = time.time()
    one, zero = nengo.dists.Choice([1.0]), nengo.dists.Choice([0.0])
    ens, notes = {}, []
    _EXPLICIT.clear()
    _UNSPLIT.clear()
    with nengo.Network(seed=0) as net:
        nengo_loihi.add_params(net)
        for inp in case["inputs"]:
            e = nengo.Ensemble(int(inp["n"]), 1, neuron_type=nengo.SpikingRectifiedLinear(), gain=one, bias=zero,
                               label=inp["name"])
            net.config[e].on_chip = False
            ens[inp["name"]] = e
        for pop in case["populations"]:
            n = int(np.prod(pop["shape"]))
            e = nengo.Ensemble(n, 1, neuron_type=nengo.LIF(), gain=one, bias=zero, label=pop["name"])
            tiles = pop.get("tiles") or {}
            if "block_shape" in tiles:
                net.config[e].block_shape = nengo_loihi.BlockShape(tuple(int(x) for x in tiles["block_shape"]),
                                                                   tuple(int(x) for x in pop["shape"]))
            elif "ranges" in tiles:
                _EXPLICIT[str(e)] = [range(int(a), int(b)) for a, b in tiles["ranges"]]
            ens[pop["name"]] = e
        for c in case["connections"]:
            w = np.asarray(weights[c["weight"]], dtype=np.float64)
            scale = float(np.abs(w).max()) or 1.0  # values only matter for discretisation, not for sizes
            w = w / scale
            in_shape = tuple(int(x) for x in c["in_shape"])
            kernel = tuple(int(x) for x in w.shape[2:])
            stride = tuple(int(x) for x in c.get("stride", (1, 1)))
            padding = tuple(int(x) for x in c.get("padding", (0, 0)))
            pre, post = ens[c["pre"]], ens[c["post"]]
            if c["encoding"] == "population":
                pad = nengo_padding(in_shape, kernel, stride, padding)
                if pad is None:
                    raise ValueError(f"{c['pre']} -> {c['post']}: padding {padding} with stride {stride} is "
                                     "neither nengo's 'same' nor 'valid'")
                t = nengo.Convolution(int(w.shape[0]), in_shape, kernel_size=kernel, strides=stride,
                                      padding=pad, channels_last=False, init=np.transpose(w, (2, 3, 1, 0)))
                if t.output_shape.size != post.n_neurons:
                    raise ValueError(f"{c['post']}: convolution gives {t.output_shape.size} outputs, "
                                     f"population has {post.n_neurons}")
            elif c["encoding"] == "discrete":
                rows, cols, vals = conv_coo(w, in_shape, stride, padding)
                t = nengo.transforms.Sparse((post.n_neurons, pre.n_neurons),
                                            indices=np.stack([rows, cols], axis=1), init=vals)
            else:
                raise ValueError(f"unknown encoding {c['encoding']}")
            nengo.Connection(pre.neurons, post.neurons, transform=t, synapse=None)
    t_net = time.time() - t0

    nw.validate_model = lambda model: None  # validate every block below instead of stopping at the first
    model = Model(dt=0.001)
    model.build(net)  # nengo-loihi's build: blocks, split_model (its block splitting), discretize_model
    t_build = time.time() - t0 - t_net
    res = {"id": case["id"], "network_seconds": round(t_net, 2), "build_seconds": round(t_build, 2),
           "populations": {}, "notes": notes}
    for pop in case["populations"]:
        blocks = model.objs[ens[pop["name"]]]["in"]
        blocks = blocks if isinstance(blocks, list) else [blocks]
        recs = [block_record(b) for b in blocks]
        res["populations"][pop["name"]] = {"summary": summarize(recs), "unsplit": _UNSPLIT.get(str(ens[pop["name"]])),
                                           "blocks": [{k: v for k, v in r.items()} for r in recs]
                                           if len(recs) <= int(case.get("max_blocks_listed", 64)) else None}
    return res


def _alarm(signum, frame):
    raise CaseTimeout()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--partial")
    p.add_argument("--case-timeout", type=int, default=600)
    p.add_argument("--only", help="comma-separated case ids")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    import numpy as np
    import nengo_loihi
    assert nengo_loihi.__version__  # fail here if the venv is broken
    from nengo_loihi import block as nb
    _install_explicit_split()
    cases = json.loads(open(a.cases).read())
    if a.only:
        keep = set(a.only.split(","))
        cases = [c for c in cases if c["id"] in keep]
    weights = np.load(a.weights, allow_pickle=False)
    out = {"versions": versions(), "limits": {"compartments": nb.MAX_COMPARTMENTS, "in_axons": nb.MAX_IN_AXONS,
                                              "out_axons": nb.MAX_OUT_AXONS, "synapse_bits": nb.MAX_SYNAPSE_BITS},
           "cases": []}
    signal.signal(signal.SIGALRM, _alarm)
    for case in cases:
        t0 = time.time()
        try:
            signal.alarm(a.case_timeout)
            try:
                r = run_case(case, weights)
            finally:
                signal.alarm(0)
        except CaseTimeout:
            r = {"id": case["id"], "error": f"timed out after {a.case_timeout} s"}
        except Exception as e:  # noqa: BLE001 - a failed build is a result
            r = {"id": case["id"], "error": short(e), "where": where(e)}
        r["seconds"] = round(time.time() - t0, 2)
        r["hash"] = case.get("hash")  # the parent's fingerprint of the case (its --resume reuses matching ones)
        out["cases"].append(r)
        if a.partial:
            with open(a.partial, "a") as f:
                f.write(json.dumps(r) + "\n")
        print(f"[worker] {case['id']}: {r.get('error') or 'built'} ({r['seconds']} s)", file=sys.stderr, flush=True)
    REAL_STDOUT.write(json.dumps(out) + "\n")
    REAL_STDOUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
