"""Cross-check of our Loihi placement (hw_backends/loihi/placement.py under profile "loihi1", nengo-loihi's
per-core figures) against nengo-loihi 1.1.0's own block splitting and per-core validation (issue 14, item 3).

nengo-loihi is installed in a throwaway venv (default ~/.cache/spk-nengo-loihi/venv, reused when it exists;
delete it to reinstall): Python 3.10, nengo-loihi==1.1.0 with nengo==3.2.0 (the newest nengo it declares
tested, nengo_loihi/version.py) and numpy<2 (nengo 3.2.0 imports numpy.product, removed in numpy 2). No NxSDK:
its builder (blocks, split_blocks.split_model, discretize, validate) runs without Loihi hardware.

Layers: populations of our networks whose every incoming projection nengo-loihi can express (Conv2d, Conv1d,
SumPool2d): the SPS stem convolutions (BatchNorm folded), a max-pool OR, the token-wise Linear layers (q, MLP)
and a graded residual sum of digits-2-64 and cifar10-4-384 (spikformer.synthetic.randomized_model, seed 0:
sizes do not depend on trained values). Each layer is the population as it sits in the quantised graph
(hw_backends.loihi.compile.build: SSA form --ssa-form, default graded as spk-convert takes it; weights
--weight-bits, default 8, one synapse group per projection), with all its incoming projections, each
presynaptic population an off-chip nengo Ensemble whose spikes enter as chip input axons (SpikeInput), the layer
an on-chip LIF Ensemble; its consumers (the populations it feeds) are built on chip too, fed by it only, so that
its output axons exist. bench/crosschecks/nengo_placement_worker.py builds the cases inside the venv:
    population/auto  the incoming projections as nengo.Convolution (pop32 axons, one per input position, the
                     channel in the spike; the kernel stored once per tap pattern), nengo-loihi's own split
                     (split_blocks.split_block: equal contiguous runs of the flat neuron index)
    discrete/auto    the same as nengo.transforms.Sparse (every synapse its own, one axon per presynaptic neuron),
                     nengo-loihi's own split; skipped over --discrete-max-synapses (its split is per-axon Python)
    ours             our tiles as nengo_loihi.BlockShape for the layer and its consumers, every projection in the
                     axon format our placement chose; nengo-loihi's validate_block judges each of our cores, and
                     its per-core counts are compared with ours (placement's worst_core)
Entries "NAME[:wBITS][:binary|:graded]" of --presets change the weights or the SSA form of one preset; an entry
whose weights differ from --weight-bits ("digits-2-64:w16": the export's default 16-bit weights, a high and a
low 8-bit synapse group per projection, two nengo Connections) builds only the "ours" case, on
LAYERS_OTHER_BITS where given.

usage:
    .venv/bin/python bench/crosschecks/bench_nengo_placement.py [--presets digits-2-64,cifar10-4-384,digits-2-64:w16,...]
        [--weight-bits 8] [--ssa-form graded] [--layers NAME,...] [--cache-dir DIR] [--timeout 5400]
        [--case-timeout 900] [--discrete-max-synapses 3000000] [--no-consumers] [--nengo-only]
        [--out bench/results] [--render-only bench/results/nengo_placement.json]
Writes bench/results/nengo_placement.json and nengo_placement.md (atomically) and prints the tables. The default
run takes about 25 minutes on 2 cores (nengo-loihi splitting the cifar10-4-384 layers and their consumers is
most of it); --presets digits-2-64 about a minute. Exit 2 with one line if the venv cannot be built.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from venv_tools import find_python, pip_error, short  # bench/, beside this file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ground.atomic import write_text  # noqa: E402 (needs ROOT on sys.path)

SHORT = 300  # characters of a one-line cause in the results
WORKER = Path(__file__).resolve().parent / "nengo_placement_worker.py"
OUT = ROOT / "bench" / "results"
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/spk-nengo-loihi"))
REQUIREMENTS = ["nengo-loihi==1.1.0", "nengo==3.2.0", "numpy<2"]
PROFILE = "loihi1"
DEFAULT_PRESETS = "digits-2-64,cifar10-4-384,digits-2-64:binary,digits-2-64:w16,cifar10-4-384:w16"

# The layers compared, per preset (populations of the quantised graph).
LAYERS = {
    "digits-2-64": ["patch_embed.proj_lif", "patch_embed.proj_lif1", "patch_embed.proj_lif2",
                    "patch_embed.proj_lif3", "patch_embed.maxpool3", "patch_embed.rpe_lif", "block.0.attn.q_lif",
                    "block.0.attn_residual.sum", "block.0.mlp.fc1_lif", "block.0.mlp.fc2_lif", "block.1.mlp.fc1_lif",
                    "block.1.mlp.fc2_lif"],
    "cifar10-4-384": ["patch_embed.proj_lif", "patch_embed.proj_lif1", "patch_embed.proj_lif3",
                      "patch_embed.rpe_lif", "block.0.mlp.fc1_lif", "block.0.mlp.fc2_lif"],
}
# Entries at a weight precision other than --weight-bits ("NAME:w16") build only the `ours` case (our tiles
# judged by nengo-loihi), on these layers where given (the cifar layers whose output axons are largest; the whole
# list would add about half an hour).
LAYERS_OTHER_BITS = {"cifar10-4-384": ["patch_embed.proj_lif1", "patch_embed.maxpool3", "block.2.attn_residual.sum"]}


# ------------------------------------------------------------------------------------------------ helpers
def ensure_venv(cache: Path, timeout: float) -> dict:
    """Creates (or reuses) CACHE/venv with REQUIREMENTS. Returns {ok, python, reused, seconds, freeze, cause, log}."""
    t0 = time.time()
    venv = cache / "venv"
    py = venv / "bin" / "python"
    marker = venv / ".spk-installed"
    res = {"venv": str(venv), "requirements": REQUIREMENTS, "ok": False, "reused": False,
           "log": str(cache / "install.log")}
    if marker.exists() and py.exists():
        info = json.loads(marker.read_text())
        if info.get("requirements") == REQUIREMENTS:
            res.update(info, ok=True, reused=True, python=str(py), seconds=0.0)
            return res
    base = find_python("3.10")
    if base is None:
        res.update(cause="no python3.10 interpreter found (PATH, ~/.pyenv/versions)", seconds=0.0)
        return res
    cache.mkdir(parents=True, exist_ok=True)
    if venv.exists():
        shutil.rmtree(venv)
    with open(cache / "install.log", "w") as log:
        r = subprocess.run([base, "-m", "venv", str(venv)], stdout=log, stderr=subprocess.STDOUT, timeout=600)
        if r.returncode != 0:
            res.update(cause="venv creation failed (see the log)", seconds=round(time.time() - t0, 1))
            return res
        cmd = [str(py), "-m", "pip", "--disable-pip-version-check", "install", *REQUIREMENTS]
        log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            res.update(cause=f"pip install timed out after {timeout:.0f} s", seconds=round(time.time() - t0, 1))
            return res
        log.write(r.stdout + f"\n[exit {r.returncode}]\n")
    if r.returncode != 0:
        res.update(cause="pip: " + pip_error(r.stdout, SHORT), seconds=round(time.time() - t0, 1))
        return res
    chk = subprocess.run([str(py), "-c", "import nengo_loihi, nengo; print(nengo_loihi.__version__)"],
                         capture_output=True, text=True, timeout=300)
    if chk.returncode != 0:
        res.update(cause="import nengo_loihi failed: " + short(chk.stderr.strip().splitlines()[-1:], SHORT),
                   seconds=round(time.time() - t0, 1))
        return res
    fr = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True)
    info = {"requirements": REQUIREMENTS, "python_base": base, "install_seconds": round(time.time() - t0, 1),
            "installed_at": time.strftime("%Y-%m-%d %H:%M"),
            "freeze": [ln for ln in fr.stdout.splitlines() if ln.strip()]}
    marker.write_text(json.dumps(info, indent=1))
    res.update(info, ok=True, python=str(py), seconds=info["install_seconds"])
    return res


def nengo_info(py: str) -> tuple[dict, dict]:
    """Versions in the venv and nengo-loihi's per-core limits (as the worker reports them)."""
    code = ("import json, sys, importlib.metadata as md\n"
            "from nengo_loihi import block as b\n"
            "v = {'python': sys.version.split()[0]}\n"
            "v.update({p: md.version(p) for p in ('nengo-loihi', 'nengo', 'numpy', 'scipy')})\n"
            "print(json.dumps([v, {'compartments': b.MAX_COMPARTMENTS, 'in_axons': b.MAX_IN_AXONS, "
            "'out_axons': b.MAX_OUT_AXONS, 'synapse_bits': b.MAX_SYNAPSE_BITS}]))\n")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300)
    return tuple(json.loads(r.stdout)) if r.returncode == 0 else ({}, {})


# ------------------------------------------------------------------------------------------------ our side
def quantised_graph(preset: str, weight_bits: int, form: str):
    """The quantised graph and the schedule's projections of a randomized preset, as spk-convert --target loihi
    builds them (compile.compile_graph) in SSA form `form`."""
    import torch
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.compile import compile_graph
    from spikformer.synthetic import randomized_model
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    compiled = compile_graph(lower(spikformer_to_ir(randomized_model(preset, seed=0)), ssa_form=form), weight_bits=weight_bits)
    return compiled.graph, compiled.schedule["projections"]


def our_placement(q, projs) -> dict:
    """map_resources under the Loihi 1 profile (nengo-loihi's per-core figures)."""
    from hw_backends.loihi import resources
    if "profile" not in inspect.signature(resources.map_resources).parameters:
        raise SystemExit("hw_backends.loihi.resources.map_resources takes no profile= (the per-profile placement "
                         "is missing); --nengo-only builds the nengo-loihi side alone")
    return resources.map_resources(q, projs, profile=PROFILE)


def ours_layer(res: dict, name: str) -> dict:
    r = res["populations"][name]
    return {"cores": int(r["cores"]), "binding": r.get("binding"), "tightest": r.get("tightest"),
            "tile": [int(x) for x in r["tile"]], "grid": [int(x) for x in r["grid"]],
            "worst": {k: int(v["used"]) for k, v in r["worst_core"].items()},
            "synapses": r.get("synapses"), "synapse_bits": r.get("synapse_bits"),
            "input_axons": r.get("input_axons"), "output_axons": r.get("output_axons"),
            "axon_formats": dict(r.get("axon_formats", {}))}


def ours_variants(q, projs, name: str, tile: list, tiles: dict | None = None) -> dict:
    """Our worst-core figures on the same tile with our modelling choices undone one by one, to attribute a
    difference: `one_exponent` (every projection one weight-exponent group, as nengo-loihi's one weight exponent
    per Synapse), `one_exponent_no_delay` (also no delay bits: nengo-loihi 1.1.0 builds no delays) and
    `nengo_formats` (also no index bits on discrete synapse lists: nengo-loihi stores discrete weights with
    compression 3, without indices; done by a negative bit count on those projections, exact on full tiles). Uses
    the placement's own counting (placement.PopulationCut); `one_exponent` also recounts the output axons toward
    the consumers cut as `tiles` (our placement's tiles by population). An `error` where the placement's
    internals are not as expected."""
    import copy
    try:
        from hw_backends.loihi import placement as P
        from hw_backends.loihi.connectivity import geometry
        from hardware.loihi.profiles import get_profile
        prof = get_profile(PROFILE)
        shapes = q.shapes()
        out = {}
        # index bits of a full tile (the worst core is a full one); undone on discrete lists in the last variant
        idx = max(prof.index_bits_min, math.ceil(math.log2(max(math.prod(tile), 2))))
        for variant, keep_delay, discrete_index in (("one_exponent", True, True),
                                                    ("one_exponent_no_delay", False, True),
                                                    ("nengo_formats", False, False)):
            incs = []
            for p in projs:
                if p.post != name:
                    continue
                syn = copy.copy(q.nodes[p.synapse])
                syn.weight_exp = 0
                geom = geometry(syn, shapes[q.in_edges(p.synapse)[0].src], shapes[p.synapse])
                population = bool(prof.population_axons and geom.can_population)
                extra = p.delay.bit_length() if keep_delay else 0
                if not population and not discrete_index:
                    extra -= idx  # nengo-loihi's discrete synapses carry no index bits (compression 3)
                incs.append(P.Incoming(p, geom, population, extra, prof.synapse_groups_share_axons))
            shape = tuple(shapes[name])
            worst, _ = P.PopulationCut(name, shape, incs, P.SenderLoad(shape), prof).in_side(tuple(tile))
            out[variant] = {k: int(v) for k, v in worst.items()}
        if tiles:  # output axons with every consumer's projection from `name` one weight-exponent group
            into = {}
            for p in projs:
                if p.pre == name and p.post in tiles:
                    syn = copy.copy(q.nodes[p.synapse])
                    syn.weight_exp = 0
                    geom = geometry(syn, shapes[q.in_edges(p.synapse)[0].src], shapes[p.synapse])
                    into.setdefault(p.post, []).append(P.Incoming(p, geom, bool(prof.population_axons and
                                                                               geom.can_population),
                                                                  0, prof.synapse_groups_share_axons))
            if into:
                load = P._sender_load(name, tuple(shapes[name]), into, tiles, prof)
                out["one_exponent"]["output_axons"] = int(load.per_tile(tuple(tile)).max())
        return out
    except Exception as e:  # noqa: BLE001 - an internal API that moved: the bench still reports the rest
        return {"error": short(f"{type(e).__name__}: {e}", SHORT)}


def _valid_positions(n_in: int, n_out: int, k: int, s: int, p: int) -> "list[int]":
    """Per kernel tap along one axis: the output positions whose input at that tap is not padding."""
    out = []
    for t in range(k):
        i = [o * s - p + t for o in range(n_out)]
        out.append(sum(0 <= x < n_in for x in i))
    return out


def _as_conv(syn, pre_shape, post_shape):
    """(weight [F, C, kh, kw], in_shape, stride, padding) of a synapse node as a 2-D convolution over the
    presynaptic neurons, or (None, why). Token tensors (C, L) are images (C, 1, L); a SumPool2d is a convolution
    whose kernel is the identity across channels, a grouped convolution one whose kernel is block-diagonal. Conv
    weights are structural: a zero weight is stored as 1, since our placement counts every synapse of the
    geometry, zero weights included (connectivity.py)."""
    import numpy as np
    from convert import ir
    if isinstance(syn, (ir.Conv2d, ir.Conv1d)):
        w = np.asarray(syn.weight)
        w = np.where(w == 0, 1, w) if isinstance(syn, ir.Conv2d) else np.where(w == 0, 1, w)[:, :, None, :]
        if syn.groups != 1:  # grouped / depthwise: block-diagonal over channels (the residual sums' Conv1d)
            g, (f, cg) = syn.groups, w.shape[:2]
            full = np.zeros((f, cg * g) + w.shape[2:], w.dtype)
            for i in range(g):
                full[i * (f // g):(i + 1) * (f // g), i * cg:(i + 1) * cg] = w[i * (f // g):(i + 1) * (f // g)]
            w = full
        if isinstance(syn, ir.Conv2d):
            return (w, list(pre_shape), list(syn.stride), list(syn.padding)), None
        return (w, [pre_shape[0], 1, math.prod(pre_shape[1:])], [1, int(syn.stride)], [0, int(syn.padding)]), None
    if isinstance(syn, ir.SumPool2d):
        c = pre_shape[0]
        w = np.zeros((c, c) + tuple(syn.kernel))
        w[np.arange(c), np.arange(c)] = 1
        return (w, list(pre_shape), list(syn.stride), list(syn.padding)), None
    return None, f"a {syn.kind} (no nengo transform expresses it)"


def _connection(q, shapes, p, weights: dict) -> tuple[dict | None, str | None]:
    import numpy as np
    from convert import ir
    syn = q.nodes[p.synapse]
    conv, why = _as_conv(syn, tuple(shapes[p.pre]), tuple(shapes[p.post]))
    if conv is None:
        return None, f"{p.synapse}: {why}"
    w, in_shape, stride, padding = conv
    key = f"w{len(weights)}"
    weights[key] = w.astype(np.int16)
    out_sp = [1, *shapes[p.post][1:]] if len(shapes[p.post]) == 2 else list(shapes[p.post][1:])
    vy = _valid_positions(in_shape[1], out_sp[0], w.shape[2], stride[0], padding[0])
    vx = _valid_positions(in_shape[2], out_sp[1], w.shape[3], stride[1], padding[1])
    nnz = (w != 0).sum(axis=(0, 1))
    synapses = int(sum(int(nnz[a, b]) * vy[a] * vx[b] for a in range(w.shape[2]) for b in range(w.shape[3])))
    return {"pre": p.pre, "post": p.post, "synapse": p.synapse, "kind": syn.kind, "delay": int(p.delay),
            "groups": int(getattr(syn, "groups", 1)),
            "pre_is_input": isinstance(q.nodes[p.pre], ir.Input), "pre_neurons": math.prod(shapes[p.pre]),
            "weight": key, "weight_shape": list(w.shape),
            "zero_weights": int((np.asarray(syn.weight) == 0).sum()) if hasattr(syn, "weight") and
            not isinstance(syn, ir.SumPool2d) else 0,
            "in_shape": in_shape, "stride": stride, "padding": padding, "synapses": synapses,
            "exponent_groups": int(np.unique(np.asarray(getattr(syn, "weight_exp", 0))).size)}, None


def layer_spec(q, projs, post: str, weights: dict) -> dict:
    """Population `post`: its incoming projections as worker connections (or `why` it cannot be expressed) and
    its consumers (the populations it projects to, with that projection), for its output axons."""
    shapes = q.shapes()
    spec = {"post": post, "source": q.nodes[post].source, "shape": list(shapes[post]),
            "neurons": math.prod(shapes[post]), "projections": [], "synapses": 0, "delayed_synapses": 0,
            "consumers": {}, "consumers_missing": [], "low_parts": 0, "consumer_low_parts": 0}
    low_parts = set(q.metadata.get("weight_low_parts", {}))  # the low 8-bit parts of 16-bit weights
    for p in projs:
        if p.post == post:
            c, why = _connection(q, shapes, p, weights)
            if c is None:
                spec["why"] = why
                return spec
            spec["projections"].append(c)
            spec["low_parts"] += p.synapse in low_parts
            spec["synapses"] += c["synapses"]
            spec["delayed_synapses"] += c["synapses"] if p.delay else 0
    if not spec["projections"]:
        spec["why"] = "no incoming projection"
    for p in projs:
        if p.pre == post:
            c, why = _connection(q, shapes, p, weights)
            if c is None:
                if why not in spec["consumers_missing"]:
                    spec["consumers_missing"].append(why)
                continue
            spec["consumer_low_parts"] += p.synapse in low_parts
            spec["consumers"].setdefault(p.post, {"shape": list(shapes[p.post]), "projections": []})
            spec["consumers"][p.post]["projections"].append(c)
    return spec


# ------------------------------------------------------------------------------------------------ nengo side
def _worker_conn(c: dict, encoding: str) -> dict:
    return {k: c[k] for k in ("pre", "post", "weight", "in_shape", "stride", "padding")} | {"encoding": encoding}


def _consumer_format(c: dict, placement: dict | None) -> str:
    """The axon format of a consumer's projection from the layer: ours where we have a placement, else the rule
    it follows (population axons for convolutions and token-wise Linears, discrete for a SumPool2d)."""
    if placement is not None:
        return placement["populations"][c["post"]]["axon_formats"].get(c["synapse"], "discrete")
    return "population" if c["kind"] in ("Conv2d", "Conv1d") and c["groups"] == 1 else "discrete"


def make_cases(spec: dict, preset: str, ours: dict | None, placement: dict | None, cap: int,
               consumers: bool, ours_only: bool = False) -> tuple[list[dict], dict]:
    """The worker cases of one layer and, per case kind, why one is skipped. Each case builds the layer with all
    its incoming projections and (unless `consumers` is off) its consumers on chip, fed by this layer only, each
    consumer projection in our axon format, so that the layer's output axons exist:
    population/auto, discrete/auto: the layer's incoming projections in that encoding, every block split by
        nengo-loihi itself;
    ours: our tiles (BlockShape) for the layer and its consumers, every projection in the axon format our
        placement chose for it."""
    name = spec["post"]
    inputs = [{"name": c["pre"], "n": c["pre_neurons"]} for c in
              {c["pre"]: c for c in spec["projections"]}.values()]
    cons = []
    if consumers:
        for cname, cs in spec["consumers"].items():
            tile = None if placement is None else [int(x) for x in placement["populations"][cname]["tile"]]
            cons.append(({"name": cname, "shape": cs["shape"]}, tile,
                         [(c, _consumer_format(c, placement)) for c in cs["projections"]]))
    cases, skipped = [], {}
    kinds = [] if ours_only and ours is not None else [("population/auto", "population"),
                                                         ("discrete/auto", "discrete")]
    if ours is not None:
        kinds.append(("ours", None))
    for kind, enc in kinds:
        fmt = (lambda c: enc) if enc else (lambda c: ours["axon_formats"].get(c["synapse"], "discrete"))
        pops = [{"name": name, "shape": spec["shape"],
                 "tiles": None if enc else {"block_shape": ours["tile"]}}]
        conns = [_worker_conn(c, fmt(c)) for c in spec["projections"]]
        discrete = sum(c["synapses"] for c in spec["projections"] if fmt(c) == "discrete")
        for pop, tile, cps in cons:
            pops.append(dict(pop, tiles=None if enc or tile is None else {"block_shape": tile}))
            conns += [_worker_conn(c, f) for c, f in cps]
            discrete += sum(c["synapses"] for c, f in cps if f == "discrete")
        if discrete > cap:
            skipped[kind] = (f"{discrete:,} discrete synapses, over --discrete-max-synapses {cap:,} (nengo-loihi "
                             "splits discrete synapses axon by axon in Python)")
            continue
        cases.append({"id": f"{preset}/{name}/{kind}", "inputs": inputs, "populations": pops,
                      "connections": conns})
    return cases, skipped


def _fingerprint(case: dict, weights: dict) -> str:
    import hashlib
    h = hashlib.sha256(json.dumps(case, sort_keys=True).encode())
    for c in case["connections"]:
        h.update(weights[c["weight"]].tobytes())
    return h.hexdigest()[:16]


def run_worker(py: str, cases: list[dict], weights: dict, work: Path, args) -> dict:
    """Runs the worker on all cases (one process, --timeout in all, --case-timeout each). A worker that dies or
    times out keeps the cases it finished (its partial file); --resume reuses the finished cases of an earlier
    run whose fingerprint (case and weights) is unchanged and runs only the others."""
    import numpy as np
    work.mkdir(parents=True, exist_ok=True)
    cases_file, w_file, partial = work / "cases.json", work / "weights.npz", work / "partial.jsonl"
    for c in cases:
        c["hash"] = _fingerprint(c, weights)
    done = {}
    if args.resume and partial.exists():
        want = {c["id"]: c["hash"] for c in cases}
        for ln in partial.read_text().splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if r.get("hash") and want.get(r["id"]) == r["hash"] and "timed out" not in str(r.get("error", "")):
                done[r["id"]] = r
    elif partial.exists():
        partial.unlink()
    todo = [c for c in cases if c["id"] not in done]
    cases_file.write_text(json.dumps(todo))
    np.savez(w_file, **weights)
    cmd = [py, str(WORKER), "--cases", str(cases_file), "--weights", str(w_file), "--partial", str(partial),
           "--case-timeout", str(args.case_timeout)]
    t0 = time.time()
    out = {"command": cmd, "reused_cases": len(done)}
    if done:
        print(f"--resume: {len(done)} cases reused from {partial}, {len(todo)} to run", flush=True)
    try:
        r = subprocess.run(cmd, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=args.timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        (work / "worker.stderr").write_text(r.stderr)
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode == 0 and line.startswith("{"):
            out.update(json.loads(line))
        else:
            out["fatal"] = (f"worker exit {r.returncode} (rerun with --resume to keep the finished cases): "
                            + short(r.stderr.strip().splitlines()[-1:] or "", SHORT))
    except subprocess.TimeoutExpired:
        out["fatal"] = f"worker timed out after {args.timeout} s (rerun with --resume to keep the finished cases)"
    if "cases" not in out:
        new = [json.loads(ln) for ln in partial.read_text().splitlines()] if partial.exists() else []
        out["cases"] = [r for r in new if r["id"] not in done]
    out["cases"] = list(done.values()) + out["cases"]
    out["seconds"] = round(time.time() - t0, 1)
    return out


# ------------------------------------------------------------------------------------------------ comparison
METRICS = (("compartments", "compartments"), ("input_axons", "in_axons"), ("output_axons", "out_axons"),
           ("synapse_bits", "synapse_bits"))


def _nengo_view(case: dict | None, name: str) -> dict:
    if case is None:
        return {"missing": True}
    if case.get("error"):
        return {"error": case["error"], "where": case.get("where"), "seconds": case.get("seconds")}
    p = case["populations"][name]
    s = p["summary"]
    blocks = p.get("blocks") or []
    syn = [x for b in blocks for x in b["synapses"]]
    return {"blocks": s["blocks"], "valid": s["valid"], "errors": s.get("errors"),
            "invalid_blocks": s.get("invalid_blocks", 0), "blocks_over": s.get("blocks_over", {}),
            "max": {k: s[k]["max"] for k in ("compartments", "in_axons", "out_axons", "synapse_bits")},
            "total": {k: s[k]["total"] for k in ("compartments", "in_axons", "out_axons", "synapse_bits")},
            "synapse_formats": s["synapse_formats"], "unsplit": p.get("unsplit"),
            "synapse_bits_without_dedup": s.get("synapse_bits_without_dedup"),
            "stored_weights": sum(x["weights"] for x in syn) if syn else None,
            "seconds": case.get("seconds"), "build_seconds": case.get("build_seconds")}


def _invalid_reasons(v: dict, what: str) -> list[str]:
    """Why nengo-loihi's own split fails its own validation, per limit it exceeds."""
    if v.get("valid", True):
        return []
    why = {
        "out_axons": "it counts a block's output axons before its consumers are split; the consumers' contiguous "
                     "runs of the flat (channel-major) index each span the whole image or token grid, so every "
                     "block of this layer sends an axon per position to nearly every consumer block",
        "in_axons": "contiguous channel-major runs span every position, so every block needs every presynaptic "
                    "neuron of every incoming projection (split_blocks.py's own TODO: equal runs can leave blocks "
                    "with more axons than allowed)",
        "synapse_bits": "it divides the unsplit block's synapse bits evenly over the runs, but the shared "
                        "convolution weights of a run do not shrink with it (one weight set per tap pattern and "
                        "compartment base)",
        "compartments": "a run larger than a core",
    }
    over = v.get("blocks_over") or {}
    parts = [f"{n} of {v['blocks']} blocks over {k.replace('_', ' ')} ({why.get(k, '')})" for k, n in over.items()]
    if not parts:
        parts = [f"{v['invalid_blocks']} of {v['blocks']} blocks: {v['errors'][0]}"]
    return [f"{what} fails nengo-loihi's own validation: " + "; ".join(parts)]


def compare_layer(spec: dict, ours: dict | None, nengo: dict) -> dict:
    """Verdict and the reasons for every difference, from the measured figures of both sides."""
    verdict, reasons = {}, []
    pa, da, oc = nengo.get("population/auto", {}), nengo.get("discrete/auto", {}), nengo.get("ours", {})
    if ours is None:
        return {"verdict": verdict, "reasons": reasons}
    fmts = set(ours["axon_formats"].values())
    own = pa if fmts == {"population"} else da if fmts == {"discrete"} else {}
    if "blocks" in own:
        verdict["cores_equal"] = ours["cores"] == own["blocks"]
        verdict["nengo_split_valid"] = own["valid"]
        need = (own.get("unsplit") or {}).get("splits_needed", {})
        enc = "population" if own is pa else "discrete"
        if ours["cores"] != own["blocks"]:
            tile = "x".join(map(str, ours["tile"]))
            why = (f"cores differ ({ours['cores']:,} ours, {own['blocks']:,} nengo-loihi, {enc} encoding): "
                   "nengo-loihi cuts the flat neuron index into equal contiguous runs, as many as the largest ratio "
                   "of its unsplit block to the limits asks (" + ", ".join(f"{k} {v}" for k, v in need.items() if v)
                   + "), without counting what a run needs after the cut; ours searches tile shapes over the "
                   f"population's (C, H, W) / (C, L) with every limit counted per tile ({tile}, binding "
                   f"{ours['binding']})")
            if ours["binding"] == "output_axons" and spec["consumers_missing"]:
                why += (". Ours binds on output axons toward consumers nengo-loihi cannot express ("
                        + "; ".join(spec["consumers_missing"][:2]) + "), so nengo-loihi's build has none")
            reasons.append(why)
        reasons += _invalid_reasons(own, f"nengo-loihi's own split ({enc} encoding)")
    if "blocks" in da and da is not own:
        reasons += _invalid_reasons(da, "nengo-loihi's own split (discrete encoding)")
    if "blocks" in oc:
        verdict["our_tiles_valid"] = oc["valid"]
        verdict["blocks_match_our_cores"] = oc["blocks"] == ours["cores"]
        diff = {}
        for k_ours, k_n in METRICS:
            a, b = ours["worst"].get(k_ours), oc["max"][k_n]
            if k_ours == "output_axons" and spec["consumers_missing"]:
                verdict["worst_output_axons_equal"] = None  # not comparable: consumers missing on nengo's side
            else:
                verdict[f"worst_{k_ours}_equal"] = a == b
            if a != b:
                diff[k_ours] = (a, b)
        if not oc["valid"]:
            over = oc.get("blocks_over") or {}
            reasons.append(f"nengo-loihi REJECTS our tiles: {oc['invalid_blocks']:,} of {oc['blocks']:,} cores ("
                           + ", ".join(f"{n:,} over {k.replace('_', ' ')}" for k, n in over.items())
                           + f"; e.g. {oc['errors'][0]})")
        if "synapse_bits" in diff:
            a, b = diff["synapse_bits"]
            v = ours.get("variants") or {}
            r = f"worst-core synapse bits {a:,} ours vs {b:,} nengo-loihi ({(a - b) / b * 100:+.1f} %)"
            if "one_exponent_no_delay" in v:
                v1, v2 = v["one_exponent"]["synapse_bits"], v["one_exponent_no_delay"]["synapse_bits"]
                groups = [f"{c['synapse']} {c['exponent_groups']}" for c in spec["projections"]
                          if c["exponent_groups"] > 1]
                parts = []
                if a != v1:
                    parts.append(f"{a - v1:+,} from weight exponents: the quantised layer has per-output-channel "
                                 f"exponents ({', '.join(groups)} groups) and ours stores one synapse list per "
                                 "exponent group per axon (one header and word rounding each); nengo-loihi has one "
                                 "weight exponent per Synapse, so it would need one connection per group, each "
                                 "with its own input axons (this build gives it one connection)")
                if v1 != v2:
                    parts.append(f"{v1 - v2:+,} from delay bits: ours stores delay.bit_length() bits with each "
                                 "synapse of a delayed projection (the residual streams: "
                                 + ", ".join(f"{c['synapse']} from {c['pre']} delay {c['delay']}"
                                             for c in spec["projections"] if c["delay"]) +
                                 "); nengo-loihi 1.1.0 has no synaptic delays (its builder never sets delay_bits)")
                v3 = v.get("nengo_formats", {}).get("synapse_bits", v2)
                if v2 != v3:
                    discrete = [c["synapse"] for c in spec["projections"]
                                if ours["axon_formats"].get(c["synapse"]) != "population"]
                    parts.append(f"{v2 - v3:+,} from index bits: ours stores index bits with every synapse of a "
                                 "discrete list (" + ", ".join(discrete)
                                 + "); nengo-loihi stores discrete weights with compression 3, without indices "
                                 "(block.py Synapse.set_weights), an encoding that on hardware fits a list that "
                                 "targets every compartment of the core")
                nd = oc.get("synapse_bits_without_dedup")
                if v3 != b and nd is not None and nd != b:
                    parts.append(f"{nd - b:+,} from nengo-loihi storing identical discrete synapse lists once after "
                                 "it splits a block (split_blocks.set_new_synapse_weights keeps one copy per distinct "
                                 "(weights, indices), shared through axon_to_weight_map: here border inputs whose "
                                 "windows coincide); ours keeps one list per presynaptic neuron, an upper bound")
                    b = nd
                rest = v3 - b
                parts.append("no difference left: with those choices undone ours counts exactly nengo-loihi's bits"
                             if rest == 0 else f"{rest:+,} left unexplained")
                r += ": " + "; ".join(parts)
            reasons.append(r)
        for k in ("input_axons", "output_axons", "compartments"):
            if k in diff:
                a, b = diff[k]
                r = f"worst-core {k.replace('_', ' ')} {a:,} ours vs {b:,} nengo-loihi"
                projections = (spec["projections"] if k == "input_axons" else
                               [c for cons in spec["consumers"].values() for c in cons["projections"]])
                grouped = [c["synapse"] for c in projections if c["exponent_groups"] > 1]
                one = ((ours.get("variants") or {}).get("one_exponent") or {}).get(k)
                if one is not None and k in ("input_axons", "output_axons"):
                    verdict[f"worst_{k}_equal_one_exponent"] = one == b
                if k == "output_axons" and spec["consumers_missing"]:
                    r += " (not comparable: those consumers are not built in nengo-loihi)"
                elif k in ("input_axons", "output_axons") and grouped and a > b:
                    r += (f" (x{a / b:.2f}): ours gives each weight-exponent group of a synapse present on a core "
                          f"its own axons ({len(grouped)} synapses with several exponents: {', '.join(grouped[:3])}"
                          f"{', ...' if len(grouped) > 3 else ''}), nengo-loihi's rule for separate Synapses (one "
                          "SynapseConfig, one exponent each; the loihi1 profile's synapse_groups_share_axons = "
                          "False); this bench builds each projection as one nengo Connection with one exponent, "
                          "which nengo-loihi counts once")
                    if one is not None:
                        r += (f"; recounted with one exponent per projection ours counts {one:,}"
                              + (", nengo-loihi's count" if one == b else f", {one - b:+,} left unexplained"))
                reasons.append(r)
    return {"verdict": verdict, "reasons": reasons}


def findings(all_rows: list[dict]) -> list[str]:
    """The outcome in a few sentences, counted from the rows, per weight precision."""
    out = []
    for bits in sorted({r["weight_bits"] for r in all_rows}):
        rows = [r for r in all_rows if r["weight_bits"] == bits]
        out += [f"{bits}-bit weights: {x}" for x in _findings(rows)]
    return out


def _findings(rows: list[dict]) -> list[str]:
    out = []
    judged = [r for r in rows if "our_tiles_valid" in r["verdict"]]
    if judged:
        ok = [r for r in judged if r["verdict"]["our_tiles_valid"]]
        out.append(f"nengo-loihi's validate_block accepts our tiles for {len(ok)} of {len(judged)} layers"
                   + ("" if len(ok) == len(judged) else ": REJECTED " + ", ".join(
                       f"{r['preset']} {r['layer']}" for r in judged if not r["verdict"]["our_tiles_valid"])) + ".")
        for k, _ in METRICS:
            comparable = [r for r in judged if r["verdict"].get(f"worst_{k}_equal") is not None]
            eq = sum(1 for r in comparable if r["verdict"][f"worst_{k}_equal"])
            one = sum(1 for r in comparable if r["verdict"][f"worst_{k}_equal"]
                      or r["verdict"].get(f"worst_{k}_equal_one_exponent"))
            out.append(f"worst-core {k.replace('_', ' ')}: ours equals nengo-loihi's count on the same cores in "
                       f"{eq} of {len(comparable)} layers"
                       + (f", and in {one} of {len(comparable)} once ours is recounted with one weight-exponent "
                          "group per projection (what this bench builds in nengo-loihi)"
                          if k.endswith("axons") and one != eq else "")
                       + ("" if one == len(comparable) and k.endswith("axons") or eq == len(comparable) else
                          " (the others: see their reasons)")
                       + ("" if len(comparable) == len(judged) else
                          f"; {len(judged) - len(comparable)} not comparable (consumers nengo-loihi cannot express)")
                       + ".")
        explained = sum(1 for r in judged if not r["verdict"].get("worst_synapse_bits_equal")
                        and any("no difference left" in x for x in r["reasons"]))
        differ = sum(1 for r in judged if not r["verdict"].get("worst_synapse_bits_equal"))
        if differ:
            out.append(f"synapse bits differ in {differ} layers; in {explained} of them the difference is exactly "
                       "the sum of the causes named per layer, each measured by undoing it (a recount of ours with "
                       "one weight-exponent group, without delay bits, without index bits on discrete lists; "
                       "nengo-loihi's count without its sharing of identical discrete lists), after which both "
                       "sides agree to the bit.")
    for k, kn in (("input_axons", "in_axons"), ("output_axons", "out_axons")):
        ratios = [r["ours"]["worst"][k] / r["nengo"]["ours"]["max"][kn] for r in judged
                  if r["verdict"].get(f"worst_{k}_equal") is False and r["nengo"]["ours"]["max"][kn]]
        if ratios:
            grouped = sum(1 for r in judged if r["verdict"].get(f"worst_{k}_equal") is False
                          and any("weight-exponent group" in x for x in r["reasons"]))
            out.append(f"worst-core {k.replace('_', ' ')}: ours counts {min(ratios):.2f}x to {max(ratios):.2f}x "
                       f"nengo-loihi's in {len(ratios)} layers ({grouped} of them because ours gives each exponent "
                       "group of a synapse on a core its own axons, as nengo-loihi does for separate Synapses, "
                       "while this bench builds one nengo Connection with one exponent per projection; "
                       "docs/limits.md section 2 (f)).")
    cores = [r for r in rows if "cores_equal" in r["verdict"]]
    if cores:
        eq = [r for r in cores if r["verdict"]["cores_equal"]]
        valid_eq = [r for r in eq if r["verdict"].get("nengo_split_valid")]
        out.append(f"cores: nengo-loihi's own split (our axon formats) makes as many cores as ours in {len(eq)} of "
                   f"{len(cores)} layers ({len(valid_eq)} of them valid by its own validation); where they differ "
                   "or its split is invalid, the reason is given per layer.")
    both = [r for r in rows if "blocks" in r["nengo"].get("discrete/auto", {})
            and "blocks" in r["nengo"].get("population/auto", {})]
    if both:
        more = [r for r in both if r["nengo"]["discrete/auto"]["blocks"] > r["nengo"]["population/auto"]["blocks"]]
        ratio = max(r["nengo"]["discrete/auto"]["max"]["in_axons"] / max(1, r["nengo"]["population/auto"]["max"]
                                                                         ["in_axons"]) for r in both)
        out.append(f"nengo-loihi's discrete encoding (one axon per presynaptic neuron, every synapse stored) needs "
                   f"more cores than its population encoding in {len(more)} of {len(both)} layers and up to "
                   f"{ratio:.0f}x the input axons per core: the population axons of its convolution format (one "
                   "per input position, the channel in the spike; the kernel stored once per tap pattern) are what "
                   "our placement uses for convolutions and token-wise Linears under loihi1.")
    return out


def fmt_int(v) -> str:
    return "—" if v is None else f"{int(v):,}"


def _cell(v: dict | None, what: str = "blocks") -> str:
    if not v or v.get("missing"):
        return "—"
    if v.get("skipped"):
        return "skipped"
    if v.get("error"):
        return "n/a (padding)" if "neither nengo's" in v["error"] else "error"
    if what == "valid":
        over = ", ".join(k.replace("_", " ") for k in (v.get("blocks_over") or {}))
        return "accepted" if v["valid"] else \
            f"**rejected** ({v['invalid_blocks']:,} of {v['blocks']:,} cores" + (f": {over}" if over else "") + ")"
    return f"{v['blocks']:,}" + ("" if v["valid"] else f" ({v['invalid_blocks']} invalid)")


def _per_core(d: dict | None, keys) -> str:
    if not d:
        return "—"
    return " / ".join(fmt_int(d.get(k)) for k in keys)


def write_markdown(res: dict) -> str:
    L = ["# Our Loihi placement vs nengo-loihi 1.1.0 (issue 14, item 3)", "",
         f"{res.get('date', '')}; `{res.get('command', '')}`: {res.get('seconds_total', 0):.0f} s in all "
         f"({res.get('worker', {}).get('seconds', 0):.0f} s in nengo-loihi"
         + (f"; {res['worker']['reused_cases']} cases reused from an earlier run (--resume)"
            if res.get("worker", {}).get("reused_cases") else "") + "). nengo side: "
         f"{', '.join(f'{k} {v}' for k, v in res.get('nengo_versions', {}).items())}. Per-core limits "
         f"(nengo_loihi/block.py): {', '.join(f'{k} {v:,}' for k, v in res.get('nengo_limits', {}).items())}. "
         f"Ours: `map_resources(graph, projections, profile=\"{res.get('profile', PROFILE)}\")`. Weights "
         f"{res.get('weight_bits')} bit (rows marked w16: 16 bit, our tiles only).", ""]
    L += ["## Cores", "",
          "ours: our cores (binding limit) and tile; nengo auto: the blocks nengo-loihi's own split makes "
          "(population = its convolution format, the format ours picks for these layers; discrete = every synapse "
          "its own, one axon per presynaptic neuron); our tiles: nengo-loihi's `validate_block` on our cores "
          "(our tile as its BlockShape, our axon format per projection, the consumers built so that output axons "
          "count).", "",
          "| preset | layer | neurons | synapses | ours: cores (binding) | tile | nengo population auto | "
          "nengo discrete auto | our tiles in nengo-loihi |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["layers"]:
        o = r.get("ours")
        n = r["nengo"]
        L.append(f"| {r['preset']} | {r['layer']} | {fmt_int(r['neurons'])} | {fmt_int(r['synapses'])} | "
                 + (f"{o['cores']:,} ({o['binding']})" if o else "—") + " | "
                 + ("x".join(map(str, o["tile"])) if o else "—") + " | "
                 + f"{_cell(n.get('population/auto'))} | {_cell(n.get('discrete/auto'))} | "
                 + f"{_cell(n.get('ours'), 'valid')} |")
    L += ["", "## Worst core of our tiles", "",
          "compartments / input axons / output axons / synapse bits: ours (`worst_core`) and nengo-loihi's "
          "`LoihiBlock.utilization()` of the same cores (largest over the layer's cores).", "",
          "| preset | layer | ours | nengo-loihi on our tiles | equal |", "|---|---|---|---|---|"]
    for r in res["layers"]:
        o = r.get("ours") or {}
        oc = r["nengo"].get("ours") or {}
        ok = [k for k, _ in METRICS if r["verdict"].get(f"worst_{k}_equal")]
        L.append(f"| {r['preset']} | {r['layer']} | "
                 f"{_per_core(o.get('worst'), [k for k, _ in METRICS])} | "
                 f"{_per_core(oc.get('max'), [k for _, k in METRICS])} | "
                 + (("all" if len(ok) == 4 else ", ".join(k.replace('_', ' ') for k in ok) or "none")
                    if "max" in oc else "—") + " |")
    L += ["", "## nengo-loihi's own split, per core (largest block)", "",
          "compartments / input axons / synapse bits.", "",
          "| preset | layer | population auto | discrete auto |", "|---|---|---|---|"]
    keys3 = ["compartments", "in_axons", "synapse_bits"]
    for r in res["layers"]:
        n = r["nengo"]
        L.append(f"| {r['preset']} | {r['layer']} | {_per_core(n.get('population/auto', {}).get('max'), keys3)} | "
                 f"{_per_core(n.get('discrete/auto', {}).get('max'), keys3)} |")
    L += ["", "## Reasons, per layer", ""]
    for r in res["layers"]:
        L.append(f"- **{r['preset']} {r['layer']}**: " + ("; ".join(r["reasons"]) or "equal"))
        for kind, v in r["nengo"].items():
            if v.get("skipped"):
                L.append(f"  - {kind} skipped: {v['skipped']}")
            elif v.get("error"):
                L.append(f"  - {kind}: nengo-loihi error: {v['error']} ({v.get('where')})")
    if res.get("skipped_layers"):
        L += ["", "Layers not built (not in that graph, or nengo-loihi cannot express them):", ""]
        L += [f"- {s['preset']} {s['layer']}: {s['why']}" for s in res["skipped_layers"]]
    if res.get("findings"):
        L += ["", "## Findings", ""] + [f"- {f}" for f in res["findings"]]
    L += ["", "## Method", ""] + [f"- {m}" for m in res.get("method", [])]
    return "\n".join(L) + "\n"


METHOD = [
    "nengo-loihi 1.1.0 in its own venv (Python 3.10; nengo 3.2.0, the newest nengo it declares tested; numpy<2 "
    "because nengo 3.2.0 imports numpy.product, gone in numpy 2). The main venv is untouched and imports nothing "
    "of nengo; bench/crosschecks/nengo_placement_worker.py runs inside that venv and imports nothing of this repository but "
    "bench/crosschecks/worker_tools.py (standard library only).",
    "Layers: the quantised graph spk-convert --target loihi builds (compile.compile_graph; SSA form and weight bits per "
    "entry, default graded and 8) of a randomized "
    "preset (spikformer.synthetic.randomized_model, seed 0); each layer is one population with all its incoming "
    "projections (residual streams included), every presynaptic population an off-chip nengo Ensemble (its "
    "spikes enter through nengo-loihi's SpikeInput axons), the layer an on-chip LIF Ensemble (gain 1, bias 0). "
    "Weights: the quantised mantissas with zeros stored as 1 (our placement counts every synapse of the geometry, "
    "zero weights included), scaled to max |w| = 1 (values only steer nengo-loihi's discretisation).",
    "population: nengo.Convolution, channels first, 'same'/'valid' padding (a token-wise Linear is a 1x1 "
    "convolution over the 1 x L token grid), pop_type 32 (nengo-loihi's default); discrete: "
    "nengo.transforms.Sparse with every synapse of the geometry (padding taps have none); a SumPool2d (max-pool "
    "OR) is a convolution whose kernel is the identity across channels.",
    "auto: nengo-loihi's split_blocks.split_block. ours: our tile as nengo_loihi.BlockShape (its grid is "
    "range(0, n, tile) per dimension, as ours), each projection in the axon format our placement chose for it, "
    "and the layer's consumers on chip with their own tiles and formats, fed by this layer only, so that the "
    "layer's output axons exist; consumers nengo cannot express (the SSA's AxisSynapse) are left out and named.",
    "Weight precision: --weight-bits (default 8: one synapse group per projection) for plain entries; an entry "
    "NAME:w16 takes the export's default 16-bit weights (a high and a low 8-bit synapse group per projection, two "
    "nengo Connections) and builds only the `ours` case, on LAYERS_OTHER_BITS where given.",
    "Every block is judged by nengo_loihi.builder.validate.validate_block (compartments, input and output "
    "axons, synapse bits, synapse formats); all blocks are reported instead of stopping at the first failure. "
    "Per-core figures are LoihiBlock.utilization(): compartments, sum of Synapse.n_axons, sum of "
    "Axon.axon_slots() (pop32: 2 per axon), sum of Synapse.bits().",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=DEFAULT_PRESETS,
                    help="comma list; NAME:w16 / NAME:w8 overrides --weight-bits for that entry "
                         f"(default {DEFAULT_PRESETS})")
    ap.add_argument("--layers", help="comma list of population names (default: LAYERS per preset)")
    ap.add_argument("--weight-bits", type=int, default=8, choices=(8, 16))
    ap.add_argument("--ssa-form", default="graded", choices=("graded", "binary"),
                    help="SSA form of plain entries (default graded, the form spk-convert takes for every preset)")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help=f"venv and work files (default {DEFAULT_CACHE})")
    ap.add_argument("--timeout", type=int, default=5400, help="seconds for the worker in all (default 5400)")
    ap.add_argument("--case-timeout", type=int, default=900, help="seconds per worker case (default 900)")
    ap.add_argument("--install-timeout", type=int, default=1800)
    ap.add_argument("--discrete-max-synapses", type=int, default=3_000_000,
                    help="largest discrete synapse count built in nengo-loihi (default 3,000,000)")
    ap.add_argument("--no-consumers", action="store_true", help="do not build the consumers (no output axons)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the cases an earlier run finished (same case and weights): CACHE/work/partial.jsonl")
    ap.add_argument("--nengo-only", action="store_true", help="build the nengo-loihi side without ours")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--render-only", metavar="JSON", help="rewrite the .md from a results JSON and exit")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        from bench import provenance
        res = json.loads(Path(args.render_only).read_text())
        write_text(out / "nengo_placement.md", provenance.with_line(write_markdown(res), res["provenance"]))
        return 0
    t_start = time.time()
    cache = Path(args.cache_dir)
    env = ensure_venv(cache, args.install_timeout)
    if not env["ok"]:
        print(f"cannot build the nengo-loihi venv ({' '.join(REQUIREMENTS)}) under {cache}: {env.get('cause')}; "
              f"log: {env.get('log')}", file=sys.stderr)
        return 2
    print(f"nengo-loihi venv: {'reused' if env.get('reused') else 'built'} {env['venv']} "
          f"({env.get('seconds', 0):.0f} s)", flush=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/crosschecks/bench_nengo_placement.py",
                                                         *(argv if argv is not None else sys.argv[1:])]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "weight_bits": args.weight_bits, "ssa_form": args.ssa_form, "profile": PROFILE, "method": METHOD,
           "environment": {k: v for k, v in env.items() if k != "log"}}
    wanted = set(args.layers.split(",")) if args.layers else None
    weights, cases, layers, skipped_layers = {}, [], [], []
    t0 = time.time()
    for entry in args.presets.split(","):
        # "NAME[:wBITS][:binary|:graded]": that preset with those weights and that SSA form
        base, *opts = entry.split(":")
        bits = next((int(o[1:]) for o in opts if o.startswith("w")), args.weight_bits)
        form = next((o for o in opts if o in ("binary", "graded")), args.ssa_form)
        preset = base + (f" w{bits}" if bits != args.weight_bits else "") + (f" {form}" if form != args.ssa_form
                                                                             else "")
        q, projs = quantised_graph(base, bits, form)
        placement = None if args.nengo_only else our_placement(q, projs)
        other = bits != args.weight_bits
        names = LAYERS_OTHER_BITS.get(base, LAYERS.get(base, [])) if other and not wanted else LAYERS.get(base, [])
        for name in names:
            if wanted and name not in wanted:
                continue
            if name not in q.nodes:
                skipped_layers.append({"preset": preset, "layer": name, "why": f"not in the {form} form's graph"})
                continue
            spec = layer_spec(q, projs, name, weights)
            if spec.get("why"):
                skipped_layers.append({"preset": preset, "layer": name, "why": spec["why"]})
                continue
            ours = None if placement is None else ours_layer(placement, name)
            if ours is not None:
                ours["variants"] = ours_variants(q, projs, name, ours["tile"],
                                                 {n: r["tile"] for n, r in placement["populations"].items()})
            cs, skipped = make_cases(spec, preset.replace(" ", "_"), ours, placement, args.discrete_max_synapses,
                                     not args.no_consumers, ours_only=other)
            cases += cs
            layers.append({"preset": preset, "layer": name, "spec": spec, "ours": ours, "skipped": skipped,
                           "ours_only": other and ours is not None, "bits": bits})
        del q, projs, placement
    res["seconds_ours"] = round(time.time() - t0, 1)
    print(f"{len(layers)} layers, {len(cases)} nengo-loihi cases (graphs and our placement: "
          f"{res['seconds_ours']:.0f} s)", flush=True)
    wr = run_worker(env["python"], cases, weights, cache / "work", args)
    res["nengo_versions"], res["nengo_limits"] = wr.get("versions", {}), wr.get("limits", {})
    res["worker"] = {"seconds": wr["seconds"], "fatal": wr.get("fatal"), "reused_cases": wr.get("reused_cases", 0)}
    if not wr.get("versions"):  # the worker died before its last line: ask the venv
        res["nengo_versions"], res["nengo_limits"] = nengo_info(env["python"])
    by_id = {c["id"]: c for c in wr["cases"]}
    rows = []
    for lay in layers:
        spec, name = lay["spec"], lay["layer"]
        nengo = {}
        for kind in ("population/auto", "discrete/auto", "ours"):
            if lay["ours_only"] and kind != "ours":
                continue
            if kind in lay["skipped"]:
                nengo[kind] = {"skipped": lay["skipped"][kind]}
            elif kind != "ours" or lay["ours"] is not None:
                nengo[kind] = _nengo_view(by_id.get(f"{lay['preset'].replace(' ', '_')}/{name}/{kind}"), name)
        rows.append({"preset": lay["preset"], "layer": name, "weight_bits": lay["bits"], "source": spec["source"],
                     "shape": spec["shape"],
                     "neurons": spec["neurons"], "synapses": spec["synapses"],
                     "delayed_synapses": spec["delayed_synapses"],
                     "projections": [{k: c[k] for k in ("pre", "synapse", "kind", "delay", "synapses", "zero_weights",
                                                        "in_shape", "stride", "padding")}
                                     for c in spec["projections"]],
                     "consumers": sorted(spec["consumers"]), "consumers_missing": spec["consumers_missing"],
                     "low_parts": spec["low_parts"], "consumer_low_parts": spec["consumer_low_parts"],
                     "ours": lay["ours"], "nengo": nengo, **compare_layer(spec, lay["ours"], nengo)})
    res["layers"], res["skipped_layers"] = rows, skipped_layers
    res["findings"] = findings(rows)
    res["seconds_total"] = round(time.time() - t_start, 1)
    from bench import provenance
    md = write_markdown(res)
    provenance.write_result(out, "nengo_placement", res, md, __file__,
                            extra=["bench/crosschecks/nengo_placement_worker.py", "bench/crosschecks/worker_tools.py"])
    print(md)
    print(f"wrote {out / 'nengo_placement.json'} and {out / 'nengo_placement.md'} ({res['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
