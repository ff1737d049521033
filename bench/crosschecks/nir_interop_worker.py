"""One NIR consumer on the interop bench's NIR profiles, run inside that consumer's own venv (see
bench/crosschecks/bench_nir_interop.py, which starts it). Imports nothing from this repository except its sibling
bench/crosschecks/worker_tools.py (standard library only) and, in mode "nodemap", hw_backends/nir/nirtorch_map.py, loaded by
file path.

    <venv>/bin/python bench/crosschecks/nir_interop_worker.py --consumer snntorch --cases cases.json --ref ref.npz
        --images 32 [--partial out.jsonl] [--case-timeout 300] [--nodemap FILE]

cases.json: [{"profile", "mode", "path", "dt", "kind", "T", "lif_nodes": {nir_node: ref_key}, "out_ref"}, ...].
Prints one JSON line on stdout: {"consumer", "python", "versions", "cases": [...]}; each case: reads (yes / only
with type_check=False / no), builds, runs, agreement, spike mismatches over the populations it could observe,
and `cause`, the first failure in one line. Everything the consumers print goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import json
import os
import signal
import sys
import time
import warnings

import worker_tools  # bench/, beside this file (standard library only)
from worker_tools import CaseTimeout, where

REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr  # consumers print (snntorch's "[warning] scaling weights ..."); keep stdout for the JSON

PACKAGES = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly", "sinabs": "sinabs",
            "rockpool": "rockpool", "nirtorch": "nirtorch"}

short = functools.partial(worker_tools.short, n=220)


class NotApplicable(Exception):
    """This mode does not apply to this consumer (its API has no such knob)."""


def versions(consumer: str) -> dict:
    out = {"python": sys.version.split()[0]}
    for p in dict.fromkeys([PACKAGES.get(consumer, consumer), "nir", "nirtorch", "torch", "numpy"]):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


# ------------------------------------------------------------------------------------------------ reading
def read_graph(path: str):
    """nir.read with its defaults; if that fails, nir.read(type_check=False) (so the importer is still tried)."""
    import nir
    try:
        return nir.read(path), "yes", None
    except Exception as e:  # noqa: BLE001 - any reader failure is a result
        cause = "nir.read: " + short(e)
    if "type_check" in inspect.signature(nir.read).parameters:
        try:
            return nir.read(path, type_check=False), "only with type_check=False", cause
        except Exception as e2:  # noqa: BLE001
            return None, "no", cause + " | type_check=False: " + short(e2)
    return None, "no", cause


# ------------------------------------------------------------------------------------------------ our node map
_NODEMAP = {}


def our_node_map(path: str | None, graph):
    """hw_backends/nir/nirtorch_map.py's map for this graph's dt: node_map_for(graph), else node_map(dt), else
    NODE_MAP."""
    if not path or not os.path.exists(path):
        raise NotApplicable("not available (hw_backends/nir/nirtorch_map.py does not exist)")
    if "mod" not in _NODEMAP:
        spec = importlib.util.spec_from_file_location("spk_nirtorch_map", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _NODEMAP["mod"] = mod
    mod = _NODEMAP["mod"]
    if hasattr(mod, "node_map_for"):
        return mod.node_map_for(graph)
    if hasattr(mod, "node_map"):
        md_ = graph.metadata if isinstance(graph.metadata, dict) else {}
        return mod.node_map(float(md_.get("dt", 1.0)))
    if hasattr(mod, "NODE_MAP"):
        return dict(mod.NODE_MAP)
    raise NotApplicable("nirtorch_map.py has no node_map_for / node_map / NODE_MAP")


def _complete(theirs: dict, ours: dict) -> dict:
    """The consumer's map, with ours for the node types it lacks."""
    m = dict(ours)
    m.update(theirs)
    return m


# ------------------------------------------------------------------------------------------------ consumers
def build(consumer: str, graph, mode: str, dt: float, nodemap_path: str | None):
    """(module, note). Raises NotApplicable where the mode has no meaning for the consumer."""
    import nir
    if consumer == "snntorch":
        import snntorch.import_nir as si
        if mode == "unaided":
            return si.import_from_nir(graph), "import_from_nir(graph)"
        if mode == "dt":
            raise NotApplicable("import_from_nir takes no dt (dt = 1e-4 hard-coded in snntorch/import_nir.py)")
        ours = our_node_map(nodemap_path, graph)
        import nirtorch
        g = si._replace_rnn_subgraph_with_nirgraph(graph)
        theirs = {t: (lambda n: si._nir_to_snntorch_module(n, init_hidden=True))
                  for t in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.IF, nir.LIF,
                            nir.CubaLIF)}
        return nirtorch.nir_to_torch(g, _complete(theirs, ours)), "nirtorch.nir_to_torch(snntorch's map + ours)"
    if consumer == "spikingjelly":
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.nir_exchange import from_nir as sjf
        if mode == "unaided":
            return sjf.import_from_nir(graph), "import_from_nir(graph) (dt=1e-4 default)"
        if mode == "dt":
            return sjf.import_from_nir(graph, dt=dt), f"import_from_nir(graph, dt={dt:g})"
        ours = our_node_map(nodemap_path, graph)
        import nirtorch
        theirs = sjf._NodeMapper(dt=dt).map_dict
        gm = nirtorch.nir_to_torch(graph, _complete(theirs, ours))
        functional.set_step_mode(gm, "s")
        return gm, f"nirtorch.nir_to_torch(SpikingJelly's _NodeMapper(dt={dt:g}) map + ours)"
    if consumer == "norse":
        import norse.torch as nt
        if mode == "unaided":
            return nt.from_nir(graph), "norse.torch.from_nir(graph) (dt=0.001 default)"
        if mode == "dt":
            return nt.from_nir(graph, dt=dt), f"norse.torch.from_nir(graph, dt={dt:g})"
        raise NotApplicable("norse builds through nirtorch.load with its own per-node function; no node map to "
                            "complete")
    if consumer == "sinabs":
        import sinabs
        if mode == "unaided":
            return sinabs.from_nir(graph, batch_size=_BATCH[0]), "sinabs.from_nir(graph, batch_size=N)"
        if mode == "dt":
            raise NotApplicable("sinabs.from_nir takes no dt")
        raise NotApplicable("sinabs builds through nirtorch.load with its own per-node function; no node map to "
                            "complete")
    if consumer == "rockpool":
        from rockpool.nn.modules import from_nir
        if mode == "unaided":
            return from_nir(graph), "rockpool.nn.modules.from_nir(graph)"
        if mode == "dt":
            raise NotApplicable("rockpool's from_nir takes no dt")
        raise NotApplicable("rockpool builds through nirtorch.load with its own per-node function; no node map to "
                            "complete")
    if consumer == "nirtorch":
        import nirtorch
        if mode == "unaided":
            return nirtorch.nir_to_torch(graph, {}), "nirtorch.nir_to_torch(graph, {}) (default map)"
        if mode == "dt":
            raise NotApplicable("nir_to_torch takes no dt")
        ours = our_node_map(nodemap_path, graph)
        if mode == "nodemap64":
            import torch
            return (nirtorch.nir_to_torch(graph, ours, dtype=torch.float64),
                    "nirtorch.nir_to_torch(graph, node_map_for(graph), dtype=torch.float64)")
        return nirtorch.nir_to_torch(graph, ours), "nirtorch.nir_to_torch(graph, node_map_for(graph))"
    raise ValueError(f"unknown consumer {consumer!r}")


_BATCH = [1]

NO_DT = {"snntorch": "import_from_nir takes no dt (dt = 1e-4 hard-coded in snntorch/import_nir.py)",
         "sinabs": "sinabs.from_nir takes no dt (tau in steps)", "rockpool": "rockpool's from_nir takes no dt",
         "nirtorch": "nir_to_torch takes no dt"}
NO_MAP = {c: f"{c} builds through nirtorch.load with its own per-node function; no node map to complete"
          for c in ("norse", "sinabs", "rockpool")}


def not_applicable(consumer: str, mode: str, nodemap_path: str | None) -> str | None:
    if mode == "dt":
        return NO_DT.get(consumer)
    if mode == "nodemap64" and consumer != "nirtorch":
        return "the float64 run is made in the nirtorch row only"
    if mode in ("nodemap", "nodemap64"):
        if consumer in NO_MAP:
            return NO_MAP[consumer]
        if not nodemap_path or not os.path.exists(nodemap_path):
            return "not available (hw_backends/nir/nirtorch_map.py does not exist)"
    return None


def unsupported_types(consumer: str, graph) -> list[str]:
    """The node types of the graph that the consumer's importer does not map (a hint for a failed build)."""
    import nir
    first: dict = {}
    for node in graph.nodes.values():
        if not isinstance(node, (nir.Input, nir.Output)):
            first.setdefault(type(node), node)
    if consumer in ("snntorch", "spikingjelly", "nirtorch"):
        from nirtorch.nir_interpreter import DEFAULT_MAP
        known = set(DEFAULT_MAP)
        if consumer == "snntorch":
            known |= {nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.IF, nir.LIF, nir.CubaLIF}
        elif consumer == "spikingjelly":
            from spikingjelly.activation_based.nir_exchange.from_nir import _NodeMapper
            known |= set(_NodeMapper().map_dict)
        return sorted(t.__name__ for t in first if t not in known)
    if consumer == "norse":
        from norse.torch.utils.import_nir import _import_norse_module as f
    elif consumer == "sinabs":
        from sinabs.nir import _import_sinabs_module
        f = lambda n: _import_sinabs_module(n, batch_size=1, num_timesteps=None)  # noqa: E731
    elif consumer == "rockpool":
        from rockpool.nn.modules.torch.nir import _convert_nir_to_rockpool_torch as f
    else:
        return []
    bad = []
    for t, node in first.items():
        try:
            if f(node) is None:
                bad.append(t.__name__)
        except Exception as e:  # noqa: BLE001
            bad.append(f"{t.__name__} ({type(e).__name__})")
    return sorted(bad)


def _tensor(y):
    """The first tensor of a module's output (tensor, tuple/list, or dict)."""
    import torch
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, dict):
        for v in y.values():
            t = _tensor(v)
            if t is not None:
                return t
        return None
    if isinstance(y, (tuple, list)):
        for v in y:
            t = _tensor(v)
            if t is not None:
                return t
    return None


def _sanitize(name: str) -> str:
    import keyword
    s = name.replace(".", "_")
    return "nir_node_" + s if keyword.iskeyword(s) else s


def find_modules(module, names) -> dict:
    """NIR node name -> the shallowest submodule whose last name component is the node's sanitized name."""
    found = {}
    wanted = {_sanitize(n): n for n in names}
    wanted.update({n: n for n in names})
    for qual, sub in module.named_modules():
        if not qual:
            continue
        last = qual.split(".")[-1]
        n = wanted.get(last)
        if n is not None:
            depth = qual.count(".")
            if n not in found or depth < found[n][0]:
                found[n] = (depth, sub)
    return {n: sub for n, (_, sub) in found.items()}


def run_module(consumer: str, module, x, T: int, record: dict):
    """T steps with the same input x [N, ...]; state threaded through where the module returns (out, state).
    Returns (outputs per step, {node: [per-step outputs]})."""
    import torch
    recs = {n: [] for n in record}
    hooks = []
    for n, sub in record.items():
        hooks.append(sub.register_forward_hook(lambda m, a, out, n=n: recs[n].append(_tensor(out))))
    if consumer == "snntorch":
        try:
            import snntorch.utils
            snntorch.utils.reset(module)
        except Exception:  # noqa: BLE001 - not every snntorch module has hidden state
            pass
    outs, state = [], None
    try:
        with torch.no_grad():
            for _ in range(T):
                r = module(x) if state is None else module(x, state)
                if isinstance(r, tuple) and len(r) >= 2 and not isinstance(r[1], torch.Tensor):
                    y, state = r[0], r[1]
                else:
                    y = r
                outs.append(_tensor(y))
    finally:
        for h in hooks:
            h.remove()
    return outs, recs


def compare_spikes(name, rec, ref, T, N):
    """(mismatches, compared, note): rec is a list of per-step tensors [N, ...] (from a hook), ref [T, N, ...]."""
    import numpy as np
    rec = [r for r in rec if r is not None]
    if len(rec) != T:
        return None, 0, f"{name}: {len(rec)} calls for {T} steps"
    if any(x.dim() == 0 or x.shape[0] != N for x in rec):
        return None, 0, f"{name}: output {tuple(rec[0].shape)} has no batch axis of {N}"
    c = np.stack([x.detach().float().cpu().numpy().reshape(N, -1) for x in rec])
    r = ref.reshape(T, N, -1)
    if c.shape != r.shape:
        return None, 0, f"{name}: shape {tuple(c.shape)} vs reference {tuple(r.shape)}"
    return int(((c != 0) != (r != 0)).sum()), int(r.size), None


def run_case(consumer, case, ref, n_images, nodemap_path):
    import numpy as np
    import torch
    res = {"profile": case["profile"], "mode": case["mode"], "reads": None, "builds": None, "runs": None,
           "agreement": None, "spike_mismatches": None, "spikes_compared": 0, "populations_observed": 0,
           "populations_in_file": len(case.get("lif_nodes", {})), "cause": None, "note": None, "seconds": {}}
    why = not_applicable(consumer, case["mode"], nodemap_path)
    if why:
        res.update(builds="n/a", cause=why)
        return res
    t0 = time.time()
    graph, reads, cause = read_graph(case["path"])
    res["seconds"]["read"] = round(time.time() - t0, 3)
    res["reads"] = reads
    if graph is None:
        res["cause"] = cause
        return res
    if reads != "yes":
        res["read_cause"] = cause
    t0 = time.time()
    try:
        module, note = build(consumer, graph, case["mode"], float(case["dt"]), nodemap_path)
        res["note"] = note
    except NotApplicable as e:
        res.update(builds="n/a", cause=str(e))
        return res
    except BaseException as e:  # noqa: BLE001 - asserts, NotImplementedError, even SystemExit: all are results
        if isinstance(e, (KeyboardInterrupt, CaseTimeout)):
            raise
        res.update(builds=False, cause=f"{short(e)} [{where(e)}]")
        try:
            bad = unsupported_types(consumer, graph)
            if bad:
                res["unsupported_node_types"] = bad
                res["cause"] += "; node types it does not map: " + ", ".join(bad)
        except Exception as e2:  # noqa: BLE001 - only a hint
            res["unsupported_probe_error"] = short(e2)
        return res
    finally:
        res["seconds"]["build"] = round(time.time() - t0, 3)
    if module is None or not isinstance(module, torch.nn.Module):
        res.update(builds=False, cause=f"importer returned {type(module).__name__}, not a torch module")
        return res
    res["builds"] = True
    module.eval()
    N, T = n_images, int(case["T"])
    x = torch.from_numpy(np.ascontiguousarray(ref["images"][:N])).float()
    fp = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if fp is not None and fp.dtype == torch.float64:
        x = x.double()  # the float64 run: the images as float64 (exact: they are float32 values)
    lif_nodes = case.get("lif_nodes", {})
    subs = find_modules(module, list(lif_nodes))
    t0 = time.time()
    try:
        outs, recs = run_module(consumer, module, x, T, subs)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, CaseTimeout)):
            raise
        res.update(runs=False, cause=f"{short(e)} [{where(e)}]")
        return res
    finally:
        res["seconds"]["run"] = round(time.time() - t0, 3)
    res["runs"] = True
    # spikes of the populations this consumer lets us observe (its modules for our LIF nodes, and the output
    # when the output is a population of the reference)
    total, compared, notes, per = 0, 0, [], {}
    for node, key in lif_nodes.items():
        if node not in recs:
            continue
        mm, n, note = compare_spikes(node, recs[node], ref["spk:" + key][:, :N], T, N)
        if note:
            notes.append(note)
            continue
        per[node] = mm
        total += mm
        compared += n
    out_ref = case.get("out_ref")
    if out_ref and out_ref not in {lif_nodes.get(k) for k in per}:
        mm, n, note = compare_spikes("output", outs, ref["spk:" + out_ref][:, :N], T, N)
        if note:
            notes.append(note)
        else:
            per["output"] = mm
            total += mm
            compared += n
    res["populations_observed"] = len(per)
    if per:
        res["spike_mismatches"], res["spikes_compared"] = total, compared
        res["mismatches_by_population"] = per
    if notes:
        res["observe_notes"] = notes[:5]
    y = outs[-1] if outs else None
    if case["kind"] == "full" and y is not None:
        y = y.detach().float().cpu().numpy().reshape(N, -1) if y.shape[0] == N else None
        if y is None:
            res["cause"] = "output has no batch axis"
        else:
            pred = y.argmax(1)
            ref_pred = ref["ref_pred"][:N]
            res["agreement"] = float((pred == ref_pred).mean())
            res["output_constant"] = bool(np.all(y == y[:, :1]))
            res["output_abs_max"] = float(np.abs(y).max())
    if res["cause"] is None and res["spike_mismatches"]:
        res["cause"] = (f"runs, but {res['spike_mismatches']:,} of {res['spikes_compared']:,} spike values differ "
                        f"({res['spike_mismatches'] / res['spikes_compared']:.1%})")
    elif res["cause"] is None and case["kind"] == "full" and res["agreement"] is not None and res["agreement"] < 1:
        res["cause"] = f"runs, but {res['agreement']:.0%} of predictions agree"
    return res


def _alarm(signum, frame):
    raise CaseTimeout("case timed out")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--consumer", required=True)
    p.add_argument("--cases", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--partial")
    p.add_argument("--case-timeout", type=int, default=300)
    p.add_argument("--nodemap")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import numpy as np
    try:
        import torch
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"consumer": a.consumer, "fatal": "import torch: " + short(e)}), file=REAL_STDOUT)
        return 0
    ref = dict(np.load(a.ref))
    n = min(a.images, len(ref["images"]))
    _BATCH[0] = n
    cases = json.load(open(a.cases))
    out = {"consumer": a.consumer, "python": sys.executable, "versions": versions(a.consumer), "images": n,
           "cases": []}
    # import the consumer once up front, so an import failure is reported once (and timed)
    t0 = time.time()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            importlib.import_module({"nirtorch": "nirtorch"}.get(a.consumer, PACKAGES.get(a.consumer, a.consumer)))
        out["import_seconds"] = round(time.time() - t0, 2)
    except BaseException as e:  # noqa: BLE001
        out["import_error"] = f"{short(e)} [{where(e)}]"
    signal.signal(signal.SIGALRM, _alarm)
    for case in cases:
        if "import_error" in out:
            res = {"profile": case["profile"], "mode": case["mode"], "reads": None, "builds": False,
                   "runs": None, "cause": "import " + out["import_error"]}
        else:
            signal.alarm(a.case_timeout)
            try:
                res = run_case(a.consumer, case, ref, n, a.nodemap)
            except CaseTimeout:
                res = {"profile": case["profile"], "mode": case["mode"], "reads": None, "builds": None,
                       "runs": False, "cause": f"timed out after {a.case_timeout} s"}
            finally:
                signal.alarm(0)
        out["cases"].append(res)
        if a.partial:
            with open(a.partial, "a") as f:
                f.write(json.dumps(res) + "\n")
        print(f"[{a.consumer}] {res['profile']} {res['mode']}: reads={res.get('reads')} builds={res.get('builds')} "
              f"runs={res.get('runs')} cause={res.get('cause')}", file=sys.stderr, flush=True)
    REAL_STDOUT.write(json.dumps(out) + "\n")
    REAL_STDOUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
