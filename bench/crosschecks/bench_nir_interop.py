"""Interoperability of our NIR files with the ecosystem's NIR consumers.

Each consumer is installed in its own throwaway virtual environment under a cache directory (default
~/.cache/spk-nir-interop/<consumer>, reused when it exists), with what that package pins. Python-3.10 consumers
whose pins accept torch 2.3.1 see the main venv's CPU-usable torch stack through a read-only overlay (a directory
of symlinks to torch, torchvision, torchaudio, numpy<2 and their dependencies, added by a .pth file: the
equivalent of `--system-site-packages` restricted to torch, so the consumer's own pins such as nir<=1.0.4 win);
the rest get their own torch. An install failure is a result, not a crash.

The parent (this script, main venv) makes the inputs: it trains a small digits model with `spk-train` (or reuses
one, see --checkpoint), writes the NIR file with `spk-convert --target nir`, and an .npz with the test images,
the reference logits/predictions and the reference spikes of every LIF module (analysis.reference). From that
file it derives the NIR "profiles" below, then runs bench/crosschecks/nir_interop_worker.py once per consumer inside the
consumer's venv (with a timeout), which prints one JSON line.

Profiles (each a NIR file):
    full@dt=<export>   the file exactly as spk-convert writes it (its graph metadata states dt)
    full@dt=<other>    the same network with time rescaled to the other convention (dt=1 <-> dt=1e-4: LIF tau,
                       Delay delay and I r rescaled, metadata dt changed), so both conventions are measured
    stem@dt=1, stem@dt=1e-4
                       Input -> Conv2d -> LIF -> Conv2d -> LIF -> Output, the start of the patch embedding cut
                       from the full graph: node types most consumers map, so the LIF time convention is measured
                       even where the full Spikformer graph (Threshold, I, Scale, Delay, SumPool2d, grouped
                       convolutions: whatever the exporter writes) cannot be imported
Modes:
    unaided            the consumer's own reader and importer with their defaults
    dt                 the same, given the file's dt where the importer takes a time step (else n/a)
    nodemap            our nirtorch node map (hw_backends/nir/nirtorch_map.py, written separately): the nirtorch
                       row, and consumers built on nirtorch.nir_to_torch (their map completed with ours);
                       "not available" while that module is missing
    nodemap64          (nirtorch row only) the same in float64: separates float32 rounding at the threshold
                       (the reference runs conv + BatchNorm in float32, the file holds folded weights) from
                       convention errors

usage:
    .venv/bin/python bench/crosschecks/bench_nir_interop.py [--images 32] [--consumers snntorch,norse,spikingjelly,sinabs,rockpool,nirtorch]
        [--nir FILE --ref NPZ] [--checkpoint model.pt] [--epochs 8] [--cache-dir DIR] [--timeout 1800]
        [--profiles full,stem] [--out bench/results] [--render-only bench/results/nir_interop.json]
Writes bench/results/nir_interop.json and nir_interop.md. --nir/--ref rerun the bench on a given file (the .npz
as written here: images, ref_logits, ref_pred, labels, T and "spk:<module>" arrays [T, N, ...]). The inputs and
profile files of the last run stay in <cache-dir>/inputs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from venv_tools import find_python, pip_error, short  # bench/, beside this file

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "nir_interop_worker.py"
OUT = ROOT / "bench" / "results"
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/spk-nir-interop"))
NODEMAP_PATH = ROOT / "hw_backends" / "nir" / "nirtorch_map.py"

# What each consumer is installed with. Versions are pinned to the releases measured; the package's own
# dependency pins are left to pip. "overlay": may reuse the main venv's torch 2.3.1 (cp310) when pip can
# satisfy the consumer's pins with it; otherwise the consumer gets its own torch.
CONSUMERS: dict[str, dict] = {
    "snntorch": {"python": "3.10", "requirements": ["snntorch==1.0.0", "nir", "nirtorch"], "overlay": True,
                 "note": "snntorch 1.0.0 declares no dependencies; its import_nir imports nir and nirtorch "
                         "(installed unpinned)",
                 "api": "snntorch.import_nir.import_from_nir(graph)"},
    "norse": {"python": "3.10", "requirements": ["norse==1.1.0"], "overlay": True,
              "api": "norse.torch.from_nir(graph, dt=0.001)"},
    "spikingjelly": {"python": "3.11", "requirements": ["spikingjelly[nir]==2.0.0"], "overlay": False,
                     "note": "spikingjelly 2.0.0 requires Python >= 3.11 (pip refuses it on 3.10), so its venv uses "
                             "python3.11 and its own CPU torch",
                     "api": "spikingjelly.activation_based.nir_exchange.import_from_nir(graph_or_path, dt=1e-4)"},
    "sinabs": {"python": "3.10", "requirements": ["sinabs==3.1.3"], "overlay": True,
               "api": "sinabs.from_nir(graph, batch_size)"},
    "rockpool": {"python": "3.10", "requirements": ["rockpool[torch,nir]==3.1.0"], "overlay": True,
                 "api": "rockpool.nn.modules.from_nir(graph_or_path)"},
    "nirtorch": {"python": "main", "requirements": [], "overlay": False,
                 "note": "runs in the main venv (nir 1.0.8, nirtorch 2.6): nirtorch.nir_to_torch with its default "
                         "map (unaided) or with our node map",
                 "api": "nirtorch.nir_to_torch(graph, node_map)"},
}
OVERLAY_DISTS = ("torch", "torchvision", "torchaudio", "triton", "numpy", "sympy", "mpmath", "networkx", "jinja2",
                 "MarkupSafe", "fsspec", "filelock", "typing_extensions", "pillow")
OVERLAY_PINNED = ("torch", "torchvision", "torchaudio")  # at the main venv's versions, plus numpy<2 (torch 2.3)


def overlay_pins() -> list[str]:
    import importlib.metadata as md
    pins = []
    for d in OVERLAY_PINNED:
        try:
            pins.append(f"{d}=={md.version(d).split('+')[0]}")
        except md.PackageNotFoundError:
            pass
    return pins + ["numpy<2"]


# ------------------------------------------------------------------------------------------------ helpers
def _du(path: Path) -> int:
    """Bytes on disk under path, not following symlinks."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for f in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, f))
                total += st.st_blocks * 512
            except OSError:
                pass
    return total


def _local_cpu_torch(py_tag: str) -> str | None:
    """A local CPU torch wheel for this interpreter tag (cp311) in pip's find-links directories: its version,
    to pin (the package index's Linux torch wheels pull the CUDA libraries)."""
    dirs = []
    for v in (os.environ.get("PIP_FIND_LINKS", ""),):
        dirs += v.split()
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                           timeout=60)
        for line in r.stdout.splitlines():
            if "find-links" in line:
                dirs += line.split("=", 1)[1].strip().strip("'\"").split()
    except (OSError, subprocess.TimeoutExpired):
        pass
    best = None
    for d in dirs:
        d = d.replace("file://", "")
        for w in glob.glob(os.path.join(d, f"torch-*+cpu-{py_tag}-{py_tag}-*linux*x86_64.whl")):
            ver = os.path.basename(w).split("-")[1]
            if best is None or [int(x) for x in ver.split("+")[0].split(".")] > \
                    [int(x) for x in best.split("+")[0].split(".")]:
                best = ver
    return best


def build_overlay(cache: Path) -> Path:
    """CACHE/_overlay-torch-<ver>-cp310: symlinks to the main venv's torch stack (OVERLAY_DISTS), shared by the
    python3.10 consumer venvs through a .pth file. Rebuilt when missing."""
    import importlib.metadata as md
    import torch
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    ov = cache / f"_overlay-torch-{torch.__version__.split('+')[0]}-{tag}"
    if (ov / ".complete").exists():
        return ov
    if ov.exists():
        shutil.rmtree(ov)
    ov.mkdir(parents=True)
    site = Path(torch.__file__).resolve().parents[1]
    names = set()
    wanted = {d.lower().replace("-", "_") for d in OVERLAY_DISTS}
    for dist in md.distributions():
        n = (dist.metadata["Name"] or "").lower().replace("-", "_")
        if n in wanted or n.startswith("nvidia_"):
            for f in dist.files or []:
                parts = Path(str(f)).parts
                if parts and parts[0] not in ("..", "bin", "__pycache__") and not str(parts[0]).endswith(".pth"):
                    names.add(parts[0])
    for name in sorted(names):
        src = site / name
        if src.exists() and not (ov / name).exists():
            (ov / name).symlink_to(src)
    (ov / ".complete").write_text("ok\n")
    return ov


def _pip(py: Path, args: list[str], log, timeout: float) -> subprocess.CompletedProcess:
    cmd = [str(py), "-m", "pip", "--disable-pip-version-check", *args]
    log.write(f"$ {' '.join(shlex.quote(c) for c in cmd)}\n")
    log.flush()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    log.write(r.stdout + f"\n[exit {r.returncode}]\n")
    log.flush()
    return r


def ensure_venv(name: str, cache: Path, timeout: float) -> dict:
    """Creates (or reuses) the consumer's venv. Returns {ok, python, venv, reused, seconds, torch_source, cause,
    log}."""
    spec = CONSUMERS[name]
    t0 = time.time()
    res = {"consumer": name, "requirements": spec["requirements"], "ok": False, "reused": False}
    if spec["python"] == "main":
        res.update(ok=True, python=sys.executable, venv=str(Path(sys.prefix)), reused=True,
                   torch_source="main venv", seconds=0.0)
        return res
    venv = cache / name
    py = venv / "bin" / "python"
    res["venv"] = str(venv)
    log_path = cache / f"{name}.install.log"
    res["log"] = str(log_path)
    if (venv / ".spk-installed").exists() and py.exists():
        info = json.loads((venv / ".spk-installed").read_text())
        res.update(info, ok=True, reused=True, python=str(py), seconds=0.0)
        return res
    base_py = find_python(spec["python"])
    if base_py is None:
        res.update(cause=f"no python{spec['python']} interpreter found", seconds=time.time() - t0)
        return res
    overlay = None
    if spec["overlay"]:
        if spec["python"] != f"{sys.version_info[0]}.{sys.version_info[1]}":
            overlay = None
        else:
            overlay = build_overlay(cache)
    attempts = [overlay, None] if overlay is not None else [None]
    with open(log_path, "w") as log:
        for ov in attempts:
            if venv.exists():
                shutil.rmtree(venv)
            r = subprocess.run([base_py, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                res.update(cause=short(f"venv creation failed: {r.stderr or r.stdout}"))
                break
            site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True).stdout.strip())
            cons = venv / "spk-constraints.txt"
            pins = []
            if ov is not None:
                (site / "_spk_torch_overlay.pth").write_text(str(ov) + "\n")
                pins = overlay_pins()
                torch_source = f"main venv {pins[0]} via overlay {ov}"
            else:
                tag = "cp" + spec["python"].replace(".", "")
                cpu = _local_cpu_torch(tag)
                if cpu:
                    pins = [f"torch=={cpu}"]
                    torch_source = f"local CPU wheel torch {cpu} (pip find-links)"
                else:
                    torch_source = "torch from the package index (whatever the pins select)"
            cons.write_text("".join(p + "\n" for p in pins))
            log.write(f"# attempt: {torch_source}; constraints {pins}\n")
            try:
                r = _pip(py, ["install", "-q", "--upgrade", "pip"], log, timeout)
                args = ["install", *spec["requirements"]] + (["-c", str(cons)] if pins else [])
                r = _pip(py, args, log, timeout)
            except subprocess.TimeoutExpired:
                res.update(cause=f"pip install timed out after {timeout:.0f} s")
                continue
            if r.returncode == 0:
                fr = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True)
                info = {"torch_source": torch_source, "constraints": pins, "python_base": base_py,
                        "install_seconds": round(time.time() - t0, 1), "installed_at": time.strftime("%Y-%m-%d %H:%M"),
                        "freeze": [ln for ln in fr.stdout.splitlines() if ln.strip()]}
                (venv / ".spk-installed").write_text(json.dumps(info, indent=1))
                res.update(info, ok=True, python=str(py), cause=None)
                break
            res.update(cause="pip: " + pip_error(r.stdout), torch_source=torch_source)
            if ov is not None and "ResolutionImpossible" not in r.stdout and "conflict" not in r.stdout.lower():
                break  # a failure that a different torch would not fix
    res["seconds"] = round(time.time() - t0, 1)
    return res



# ------------------------------------------------------------------------------------------------ inputs
def _run_cli(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return r.returncode, r.stdout, time.time() - t0


def make_inputs(args, work: Path, log: dict) -> tuple[Path, Path]:
    """Checkpoint (trained with spk-train unless given or cached), NIR file (spk-convert --target nir) and the
    reference .npz. Returns (nir path, npz path)."""
    ckpt = Path(args.checkpoint) if args.checkpoint else \
        Path(args.cache_dir) / "model" / f"digits-2-64-e{args.epochs}-s{args.seed}.pt"
    if not ckpt.exists():
        if args.checkpoint:
            raise SystemExit(f"--checkpoint {ckpt} does not exist")
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="spk-train-", dir=str(ckpt.parent))) / "model.pt"
        cmd = [str(ROOT / ".venv" / "bin" / "spk-train"), "--preset", "digits-2-64", "--data", "digits", "--out",
               str(tmp), "--epochs", str(args.epochs), "--device", "cpu", "--no-progress", "--seed", str(args.seed)]
        print("training:", " ".join(cmd), flush=True)
        rc, out, sec = _run_cli(cmd, 7200)
        log["train"] = {"command": cmd, "rc": rc, "seconds": round(sec, 1), "tail": out.strip().splitlines()[-4:]}
        if rc != 0:
            raise SystemExit(f"spk-train failed ({rc}):\n{out[-2000:]}")
        shutil.move(str(tmp), ckpt)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    else:
        log["train"] = {"reused": str(ckpt)}
    log["checkpoint"] = str(ckpt)
    nir_path = work / "model.nir"
    cmd = [str(ROOT / ".venv" / "bin" / "spk-convert"), str(ckpt), "--target", "nir", "-o", str(nir_path)]
    print("converting:", " ".join(cmd), flush=True)
    rc, out, sec = _run_cli(cmd, 1800)
    log["convert"] = {"command": cmd, "rc": rc, "seconds": round(sec, 1), "stdout": out.strip().splitlines()}
    if rc != 0:
        raise SystemExit(f"spk-convert failed ({rc}):\n{out[-2000:]}")
    npz = work / "reference.npz"
    t0 = time.time()
    log["reference"] = write_reference(ckpt, npz, args.images)
    log["reference"]["seconds"] = round(time.time() - t0, 1)
    return nir_path, npz


def write_reference(ckpt: Path, npz: Path, n: int) -> dict:
    """The first n test images of the checkpoint's own split, the PyTorch logits/predictions and every LIF
    module's spikes [T, n, ...] (analysis.reference.record_reference, IR layout)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    from analysis.reference import record_reference
    from spikformer.checkpoint import load_checkpoint
    from spikformer.data import load_dataset_with_info
    from spikformer.model import neuron
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model, config, meta = load_checkpoint(ckpt)
    stored = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    seed = meta.get("split_seed") if isinstance(meta.get("split_seed"), int) else 0
    (_, _, x_te, y_te), _info = load_dataset_with_info(stored.get("spec") or "digits", config.img_size,
                                                        config.in_channels, seed=seed,
                                                        num_classes=config.num_classes, T=config.T)
    x = x_te[:n].float()
    logits, recs = record_reference(model, x)
    lif = {name for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)}
    arrays = {"images": x.numpy().astype(np.float32), "labels": y_te[:n].numpy(),
              "ref_logits": logits.float().numpy(), "ref_pred": logits.argmax(-1).numpy(),
              "T": np.array(config.T)}
    for name, y in recs.items():
        if name in lif:
            a = y.numpy()
            if not np.isin(a, (0.0, 1.0)).all():
                continue
            arrays["spk:" + name] = a.astype(np.uint8)
    np.savez_compressed(npz, **arrays)
    return {"images": int(len(x)), "T": int(config.T), "lif_modules": sum(k.startswith("spk:") for k in arrays),
            "reference_accuracy_on_these": float((arrays["ref_pred"] == arrays["labels"]).mean()),
            "checkpoint_test_accuracy": meta.get("test_accuracy"), "split_seed": seed}


# ------------------------------------------------------------------------------------------------ profiles
def _read_nir(path: Path):
    import nir
    return nir.read(str(path), type_check=False)  # our grouped convolutions trip nir 1.0.8's type inference


def _meta(g) -> dict:
    m = g.metadata if isinstance(g.metadata, dict) else {}
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in m.items()}


def _lif_nodes(g, ref_keys: dict) -> dict:
    """NIR LIF node -> reference module, where the node's metadata source (or name) is a recorded LIF module of
    the same size."""
    import nir
    import numpy as np
    out = {}
    for name, node in g.nodes.items():
        if not isinstance(node, nir.LIF):
            continue
        m = node.metadata if isinstance(node.metadata, dict) else {}
        src = m.get("source", name)
        src = src.decode() if isinstance(src, bytes) else str(src)
        for key in (name, src):
            if key in ref_keys and int(np.prod(ref_keys[key])) == int(np.asarray(node.tau).size):
                out[name] = key
                break
    return out


def rescale_time(g, new_dt: float):
    """The same network in another time unit: LIF/LI/CubaLIF time constants and Delay delays scale with dt, I/IF
    r with 1/dt (so dt/tau and dt*r per step stay), metadata dt replaced."""
    import nir
    import numpy as np
    md = _meta(g)
    old = float(md.get("dt", 1.0))
    f = new_dt / old
    for node in g.nodes.values():
        if isinstance(node, (nir.LIF, nir.LI)):
            node.tau = np.asarray(node.tau, dtype=np.float64) * f
        elif isinstance(node, nir.CubaLIF):
            node.tau_mem = np.asarray(node.tau_mem, dtype=np.float64) * f
            node.tau_syn = np.asarray(node.tau_syn, dtype=np.float64) * f
        elif isinstance(node, (nir.I, nir.IF)):
            node.r = np.asarray(node.r, dtype=np.float64) / f
        elif isinstance(node, nir.Delay):
            node.delay = np.asarray(node.delay, dtype=np.float64) * f
    md["dt"] = new_dt
    md["bench_profile_note"] = f"derived by bench_nir_interop.py: time rescaled from dt={old:g} to dt={new_dt:g}"
    g.metadata = md
    return g


def stem_graph(g, max_lif: int = 2):
    """Input -> (Conv2d -> LIF) x max_lif -> Output: the chain that starts the network, cut where it branches or
    meets another node type."""
    import nir
    succ: dict[str, list] = {}
    pred: dict[str, list] = {}
    for a, b in g.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    inp = next(n for n, node in g.nodes.items() if isinstance(node, nir.Input))
    chain, cur, lifs = [inp], inp, 0
    while lifs < max_lif:
        nxt = succ.get(cur, [])
        if len(nxt) != 1 or len(pred.get(nxt[0], [])) != 1:
            break
        node = g.nodes[nxt[0]]
        if not isinstance(node, (nir.Conv2d, nir.LIF)):
            break
        chain.append(nxt[0])
        cur = nxt[0]
        lifs += isinstance(node, nir.LIF)
    while not isinstance(g.nodes[chain[-1]], nir.LIF):
        chain.pop()
    last = g.nodes[chain[-1]]
    nodes = {n: g.nodes[n] for n in chain}
    nodes["output"] = nir.Output(output_type={"output": last.output_type["output"]})
    edges = list(zip(chain, chain[1:])) + [(chain[-1], "output")]
    md = _meta(g)
    md["bench_profile_note"] = f"stem cut by bench_nir_interop.py: {' -> '.join(chain)} -> output"
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=md, type_check=False), chain[-1]


def make_profiles(nir_path: Path, npz: Path, work: Path, kinds: list[str]) -> list[dict]:
    import nir
    import numpy as np
    ref = np.load(npz)
    ref_keys = {k[4:]: ref[k].shape[2:] for k in ref.files if k.startswith("spk:")}
    T = int(ref["T"])
    g0 = _read_nir(nir_path)
    dt0 = float(_meta(g0).get("dt", 1.0))
    other = 1e-4 if dt0 == 1.0 else 1.0
    profiles = []
    for kind in kinds:
        for dt in (dt0, other):
            g = _read_nir(nir_path)
            derived = dt != dt0
            if derived:
                rescale_time(g, dt)
            out_ref = None
            if kind == "stem":
                g, last = stem_graph(g)
                out_ref = _lif_nodes(g, ref_keys).get(last)
            name = f"{kind}@dt={_dt_str(dt)}"
            path = nir_path if (kind == "full" and not derived) else work / f"{kind}_dt{_dt_str(dt)}.nir"
            if path != nir_path:
                nir.write(str(path), g)
            md = _meta(g)
            profiles.append({"profile": name, "kind": kind, "path": str(path), "dt": dt,
                             "T": int(md.get("T", T)), "derived": derived or kind != "full",
                             "lif_nodes": _lif_nodes(g, ref_keys), "out_ref": out_ref,
                             "nir_nodes": _node_counts(g)})
    return profiles


def _dt_str(dt: float) -> str:
    s = f"{dt:g}"
    if "e" not in s and dt < 1e-3:
        m, e = f"{dt:e}".split("e")
        s = f"{float(m):g}e{int(e)}"
    return s.replace("e-0", "e-")


def _node_counts(g) -> dict:
    c: dict[str, int] = {}
    for n in g.nodes.values():
        c[type(n).__name__] = c.get(type(n).__name__, 0) + 1
    return dict(sorted(c.items()))


# ------------------------------------------------------------------------------------------------ running
MODES = ("unaided", "dt", "nodemap")


def run_consumer(name: str, env: dict, profiles: list[dict], npz: Path, work: Path, args) -> dict:
    modes = MODES + (("nodemap64",) if name == "nirtorch" else ())
    cases = [{**{k: p[k] for k in ("profile", "kind", "path", "dt", "T", "lif_nodes", "out_ref")}, "mode": m}
             for p in profiles for m in modes]
    cases_file = work / f"cases_{name}.json"
    cases_file.write_text(json.dumps(cases))
    partial = work / f"partial_{name}.jsonl"
    partial.unlink(missing_ok=True)
    cmd = [env["python"], str(WORKER), "--consumer", name, "--cases", str(cases_file), "--ref", str(npz),
           "--images", str(args.images), "--partial", str(partial), "--case-timeout", str(args.case_timeout)]
    if NODEMAP_PATH.exists():
        cmd += ["--nodemap", str(NODEMAP_PATH)]
    t0 = time.time()
    out = {"consumer": name, "command": cmd}
    try:
        r = subprocess.run(cmd, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=args.timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        out["rc"] = r.returncode
        line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
        if line:
            out.update(json.loads(line))
        else:
            tail = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            out["fatal"] = short(f"worker exited {r.returncode} without a result: {tail[0]}")
        out["stderr_tail"] = r.stderr.splitlines()[-30:]
    except subprocess.TimeoutExpired:
        out["fatal"] = f"worker timed out after {args.timeout} s"
    out["seconds"] = round(time.time() - t0, 1)
    if "cases" not in out:  # keep what finished, mark the rest
        done = [json.loads(ln) for ln in partial.read_text().splitlines()] if partial.exists() else []
        seen = {(c["profile"], c["mode"]) for c in done}
        done += [{"profile": c["profile"], "mode": c["mode"], "reads": None, "builds": None, "runs": None,
                  "cause": out.get("fatal", "no result")} for c in cases if (c["profile"], c["mode"]) not in seen]
        out["cases"] = done
    return out


# ------------------------------------------------------------------------------------------------ report
OTHER_CONVENTIONS = """\
The other consumers, read in their venvs (`<venv>/lib/python3.10/site-packages/...`):

- **norse 1.1.0** `norse/torch/utils/import_nir.py` `from_nir(node, ..., dt=0.001)` (l. 150-177) builds through
  the deprecated `nirtorch.load`; a LIF becomes `LIFBoxCell(tau_mem_inv=1/tau, v_th, v_leak)` (l. 120-130), so
  `v += dt/tau (v_leak - v + I)` (`norse/torch/functional/lif_box.py` l. 95-101) with **dt = 0.001 unless passed**;
  r is not used (only a warning when r != 1), the file's v_reset is not passed (LIFBoxParameters default 0),
  threshold `>` (`heaviside`: `torch.gt`). No Conv1d, Threshold, I, Scale or Delay (`_import_norse_module`
  returns None for them).
- **sinabs 3.1.3** (pins nir <= 1.0.4, nirtorch 2.0.2 here) `sinabs/nir.py` `from_nir(node, batch_size,
  num_timesteps)` (l. 123-144), LIF -> `LIFSqueeze(tau_mem=tau, spike_threshold=v_threshold, norm_input=False)`
  (l. 94-108): **tau in steps, no dt**, exponential decay `alpha = exp(-1/tau)` (`sinabs/layers/lif.py` l. 116-121),
  `v = alpha v + I` (r ignored), default `MultiSpike` (graded: floor(v/thr) spikes per step) and
  `MembraneSubtract` reset (v_reset ignored); v_leak must be 0. No Threshold, I, Scale or Delay.
- **rockpool 3.1.0** (`rockpool[nir]` pins nir <= 1.0.4) `rockpool/nn/modules/torch/nir.py` `from_nir(source)`
  (l. 172-) via `nirtorch.load`; LIF -> `LIFNeuronTorch(tau_mem=node.tau_mem, ..., dt=min(tau_mem/(1+r)))`
  (l. 115-125): it reads `node.tau_mem`, which nir.LIF does not have (nir.LIF has `tau`), so every nir.LIF import
  fails; no Conv1d/Conv2d at all.
- **nirtorch 2.6** `nir_to_torch(graph, node_map)` has no time step: its default map covers Input, Output, Affine,
  AvgPool2d, Conv1d, Conv2d, Flatten, Linear, SumPool2d (as LPPool2d) and no neuron; our map
  (`hw_backends/nir/nirtorch_map.py`) takes dt from the graph metadata.
"""


def _fmt_bool(v) -> str:
    return {True: "yes", False: "no", None: "-", "n/a": "n/a"}.get(v, str(v))


def _fmt_agree(c: dict, n: int) -> str:
    a = c.get("agreement")
    if a is None:
        return "-"
    s = f"{round(a * n)}/{n}"
    if c.get("output_constant"):
        s += " (constant output)"
    return s


def _fmt_spikes(c: dict) -> str:
    if c.get("spike_mismatches") is None:
        return "-"
    return (f"{c['spike_mismatches']:,} / {c['spikes_compared']:,} "
            f"({c['spike_mismatches'] / max(1, c['spikes_compared']):.1%}; {c['populations_observed']} of "
            f"{c['populations_in_file']} LIF)")


def _summary_cell(cases: list[dict], n: int) -> str:
    """The best outcome over the modes of one consumer and profile."""
    def rank(c):
        if c.get("runs"):
            mm = c.get("spike_mismatches")
            agree = c.get("agreement")
            return (4, -(mm if mm is not None else 10 ** 12), agree or 0)
        return (3 if c.get("builds") is True else 2 if c.get("reads") in ("yes", "only with type_check=False")
                else 1, 0, 0)
    cs = [c for c in cases if c.get("builds") != "n/a"]
    if not cs:
        return "n/a"
    best = max(cs, key=rank)
    mode = best["mode"]
    if best.get("runs"):
        parts = []
        if best.get("agreement") is not None:
            parts.append(f"{_fmt_agree(best, n)} agree")
        if best.get("spike_mismatches") is not None:
            k = best["spike_mismatches"]
            parts.append(f"{k:,} spike{'s' if k != 1 else ''} differ{'s' if k == 1 else ''}")
        return f"runs ({mode}): " + ", ".join(parts) if parts else f"runs ({mode})"
    if best.get("builds") is False:
        un = best.get("unsupported_node_types")
        return "no build" + (f": unmapped {', '.join(un)}" if un else "")
    if best.get("reads") == "no":
        c = (best.get("cause") or "").replace("nir.read: ", "").replace("TypeError: ", "")
        return "no read: " + short(c, 70)
    return short(best.get("cause") or "?", 80)


def write_markdown(res: dict) -> str:
    L = ["# NIR interoperability: our NIR files in the ecosystem's NIR consumers", ""]
    L += [f"Generated by `bench/crosschecks/bench_nir_interop.py` on {res['date']}.", "",
          f"Command: `{res['command']}`", ""]
    m = res["machine"]
    L += [f"Machine: {m['platform']}, {m['cpus']} CPUs (shared; load average {m['loadavg']}), main venv Python "
          f"{m['python']}, torch {m['torch']}. Total time {res['seconds_total']:.0f} s "
          f"(inputs {res['seconds_inputs']:.0f} s, installs {res['seconds_install']:.0f} s, runs "
          f"{res['seconds_runs']:.0f} s). Venvs on disk: {res['disk']['total_mib']:.0f} MiB (see below).", ""]
    inp = res["inputs"]
    L += ["## Inputs", ""]
    if inp.get("given"):
        L += [f"Given: NIR `{inp['nir']}`, reference `{inp['ref']}`.", ""]
    else:
        tr = inp.get("train", {})
        L += [f"- checkpoint: `{inp.get('checkpoint')}` "
              + (f"(trained now in {tr.get('seconds')} s: {'; '.join(tr.get('tail', []))})" if "seconds" in tr
                 else "(reused from the cache)"),
              f"- NIR file: `spk-convert --target nir` in {inp['convert']['seconds']} s:"]
        L += [f"  `{ln.strip()}`" for ln in inp["convert"]["stdout"] if ln.strip()][:6]
        rf = inp["reference"]
        L += [f"- reference: {rf['images']} test images, T = {rf['T']}, spikes of {rf['lif_modules']} LIF modules; "
              f"the PyTorch model classifies {rf['reference_accuracy_on_these']:.0%} of these images correctly "
              f"(checkpoint test accuracy {rf.get('checkpoint_test_accuracy')})"]
        L += [""]
    L += ["Profiles (NIR files given to every consumer):", "",
          "| profile | nodes | LIF populations with a reference | file |", "|---|---|---|---|"]
    for p in res["profiles"]:
        nodes = ", ".join(f"{k} {v}" for k, v in p["nir_nodes"].items())
        L.append(f"| {p['profile']}{' (derived)' if p['derived'] else ' (as exported)'} | {nodes} | "
                 f"{len(p['lif_nodes'])} | `{p['path']}` |")
    L += ["", "## Consumers", "",
          "| consumer | API | Python | versions | torch | install | venv disk |", "|---|---|---|---|---|---|---|"]
    for name, e in res["environments"].items():
        v = res["consumers"].get(name, {}).get("versions", {})
        vs = ", ".join(f"{k} {x}" for k, x in v.items() if k != "python" and x)
        if not e.get("ok"):
            st = f"FAILED: {e.get('cause')}"
        elif e.get("reused") and e.get("install_seconds") is not None:
            st = f"ok (reused; installed in {e['install_seconds']:.0f} s on {e.get('installed_at')})"
        else:
            st = f"ok{' (reused)' if e.get('reused') else ''} {e.get('seconds', 0):.0f} s"
        L.append(f"| {name} | `{CONSUMERS[name]['api']}` | {v.get('python', '?')} | {vs} | "
                 f"{e.get('torch_source', '-')} | {st} | {res['disk']['venvs_mib'].get(name, 0):.0f} MiB |")
    notes = [f"- {n}: {CONSUMERS[n]['note']}" for n in res["environments"] if CONSUMERS[n].get("note")]
    L += [""] + notes if notes else []
    L += ["", f"The torch overlay shared by the python3.10 venvs (symlinks into the main venv, "
              f"{res['disk'].get('overlay_mib', 0):.1f} MiB itself): `{res['disk'].get('overlay')}`.", ""]
    profs = [p["profile"] for p in res["profiles"]]
    L += ["## Summary (best mode per consumer and profile)", "",
          "| consumer | " + " | ".join(profs) + " |", "|---|" + "---|" * len(profs)]
    for name, r in res["consumers"].items():
        n = r.get("images", res["images"])
        cells = [_summary_cell([c for c in r.get("cases", []) if c["profile"] == pr], n) for pr in profs]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += [""]
    L += ["## Results", "",
          "reads: `nir.read(path)` in the consumer's venv with its defaults (\"only with type_check=False\": the "
          "default failed, the importer was then given the graph read without type checking); builds: the "
          "importer returned a module; runs: T steps on the images (state threaded through); agreement: argmax "
          "of the output at step T vs the PyTorch prediction (full profiles); spike mismatches: differing "
          "spike/no-spike values over T x images x neurons, summed over the LIF populations the consumer's "
          "module exposes (and its output for the stem profiles); cause: the first failure, or the deviation.", "",
          "| consumer | profile | mode | reads | builds | runs | agreement | spike mismatches | cause |",
          "|---|---|---|---|---|---|---|---|---|"]
    na: dict[str, list] = {}
    for name, r in res["consumers"].items():
        n = r.get("images", res["images"])
        for c in r.get("cases", []):
            if c.get("builds") == "n/a":
                na.setdefault(name, []).append(f"{c['mode']} ({c['cause']})")
                continue
            cause = (c.get("cause") or "").replace("|", "/")
            if c.get("read_cause") and c.get("reads") != "yes":
                cause = (cause + "; " if cause else "") + "read: " + c["read_cause"].replace("|", "/")
            L.append(f"| {name} | {c['profile']} | {c['mode']} | {_fmt_bool(c.get('reads'))} | "
                     f"{_fmt_bool(c.get('builds'))} | {_fmt_bool(c.get('runs'))} | {_fmt_agree(c, n)} | "
                     f"{_fmt_spikes(c)} | {short(cause, 260) or 'matches'} |")
    L += [""]
    if na:
        L += ["Not applicable (same for every profile):", ""]
        for name, items in na.items():
            L.append(f"- {name}: " + "; ".join(sorted(set(items))))
        L += [""]
    L += ["## Time conventions", ""]
    conv = ROOT / "docs" / "nir_conventions.md"  # read from the consumers' installed sources, by hand
    if conv.exists():
        body = conv.read_text().split("\n", 1)[1]  # without its title
        L += [body.replace("\n## ", "\n### ").strip(), ""]
    L += [OTHER_CONVENTIONS, ""]
    L += ["## How the bench works", "", "- " + "\n- ".join(res["method"]), ""]
    return "\n".join(L)


def machine_info() -> dict:
    import torch
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "loadavg": load, "python": platform.python_version(),
            "torch": torch.__version__}


METHOD = [
    "Each consumer gets its own venv under the cache directory, reused when it exists (delete it to reinstall). "
    "Python 3.10 consumers whose pins accept torch 2.3.1 import the main venv's torch stack through a symlink "
    "overlay (.pth) with constraints torch==2.3.1, numpy<2; pip installs everything else they pin (sinabs and "
    "rockpool: nir<=1.0.4). spikingjelly 2.0.0 needs Python >= 3.11 and gets the local CPU torch wheel.",
    "One worker process per consumer (bench/crosschecks/nir_interop_worker.py, inside its venv, --timeout per child and "
    "--case-timeout per case) prints one JSON line; a timed-out or crashed worker keeps the cases it finished.",
    "Modes: unaided = the consumer's importer with its defaults; dt = the same, given the file's metadata dt "
    "where the importer takes a time step; nodemap = our nirtorch node map (the nirtorch row), or the consumer's "
    "map completed with ours for node types it lacks (consumers built on nirtorch.nir_to_torch: snntorch, "
    "SpikingJelly); nodemap64 = the nirtorch row in float64. Every other run is float32 (the consumers' "
    "default), so a handful of spikes can flip where the membrane lands within float32 rounding of the "
    "threshold: the reference computes conv + BatchNorm in float32, the file holds the folded weights; the "
    "nodemap64 row shows what remains without that rounding.",
    "Each step feeds the same analog image (direct encoding, as the reference); modules are called "
    "`out, state = m(x, state)` where they return a state, else `m(x)`; populations are observed with forward "
    "hooks on the submodules named after our NIR LIF nodes ('.' -> '_'); values != 0 count as spikes.",
    "The stem profiles (first Conv2d -> LIF -> Conv2d -> LIF of the patch embedding) measure the LIF time "
    "convention in every consumer that maps Conv2d and LIF, even where the full graph cannot be imported.",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=32, help="test images to run (default 32)")
    p.add_argument("--consumers", default=",".join(CONSUMERS), help=f"comma list (default {','.join(CONSUMERS)})")
    p.add_argument("--nir", help="a NIR file to measure instead of exporting one (with --ref)")
    p.add_argument("--ref", help="the reference .npz for --nir (as written by this bench)")
    p.add_argument("--checkpoint", help="a spk-train checkpoint to convert (default: train one, cached)")
    p.add_argument("--epochs", type=int, default=8, help="spk-train epochs when training (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiles", default="full,stem", help="full,stem (default both)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help=f"venvs and model cache (default {DEFAULT_CACHE})")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per consumer worker (default 1800)")
    p.add_argument("--case-timeout", type=int, default=600, help="seconds per case inside a worker (default 600)")
    p.add_argument("--install-timeout", type=int, default=3600, help="seconds per pip install (default 3600)")
    p.add_argument("--out", default=str(OUT), help="results directory (default bench/results)")
    p.add_argument("--render-only", metavar="JSON", help="rewrite nir_interop.md from a results JSON and exit")
    args = p.parse_args(argv)
    if args.render_only:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(ROOT))
        from bench import provenance
        res = json.loads(Path(args.render_only).read_text())
        from ground.atomic import write_text
        write_text(Path(args.out) / "nir_interop.md", provenance.with_line(write_markdown(res), res["provenance"]))
        return 0
    if bool(args.nir) != bool(args.ref):
        p.error("--nir and --ref go together")
    names = [c.strip() for c in args.consumers.split(",") if c.strip()]
    bad = [c for c in names if c not in CONSUMERS]
    if bad:
        p.error(f"unknown consumers {bad}; choose from {', '.join(CONSUMERS)}")
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "inputs"
    work.mkdir(exist_ok=True)
    t_start = time.time()
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/crosschecks/bench_nir_interop.py",
                                                         *(argv if argv is not None else sys.argv[1:])]),
           "machine": machine_info(), "images": args.images, "method": METHOD,
           "nodemap_module": str(NODEMAP_PATH) if NODEMAP_PATH.exists() else None}
    inputs: dict = {}
    if args.nir:
        nir_path, npz = Path(args.nir).resolve(), Path(args.ref).resolve()
        inputs.update(given=True, nir=str(nir_path), ref=str(npz))
    else:
        nir_path, npz = make_inputs(args, work, inputs)
    res["inputs"] = inputs
    res["profiles"] = make_profiles(nir_path, npz, work, [k for k in args.profiles.split(",") if k])
    res["seconds_inputs"] = round(time.time() - t_start, 1)
    print(f"inputs ready in {res['seconds_inputs']:.0f} s: " + ", ".join(p["profile"] for p in res["profiles"]),
          flush=True)

    res["environments"], res["consumers"] = {}, {}
    t_inst = t_runs = 0.0
    for name in names:
        t0 = time.time()
        env = ensure_venv(name, cache, args.install_timeout)
        t_inst += time.time() - t0
        env.pop("freeze", None) if env.get("reused") else None
        res["environments"][name] = env
        print(f"[{name}] venv: {'ok' if env['ok'] else 'FAILED'} ({env.get('seconds', 0):.0f} s) "
              f"{env.get('cause') or ''}", flush=True)
        if not env["ok"]:
            res["consumers"][name] = {"consumer": name, "cases": [
                {"profile": pr["profile"], "mode": m, "reads": None, "builds": None, "runs": None,
                 "cause": f"install failed: {env.get('cause')}"} for pr in res["profiles"] for m in MODES]}
            continue
        t0 = time.time()
        r = run_consumer(name, env, res["profiles"], npz, work, args)
        t_runs += time.time() - t0
        res["consumers"][name] = r
        ok = sum(1 for c in r["cases"] if c.get("runs"))
        print(f"[{name}] {ok} of {len(r['cases'])} cases run ({r['seconds']:.0f} s)", flush=True)
    res["seconds_install"], res["seconds_runs"] = round(t_inst, 1), round(t_runs, 1)
    venvs = {n: _du(cache / n) / 2 ** 20 for n in CONSUMERS if (cache / n).exists()}
    ov = next(iter(sorted(cache.glob("_overlay-*"))), None)
    res["disk"] = {"venvs_mib": {k: round(v, 1) for k, v in venvs.items()}, "total_mib": round(sum(venvs.values()), 1),
                   "overlay": str(ov) if ov else None, "overlay_mib": round(_du(ov) / 2 ** 20, 2) if ov else 0,
                   "note": "bytes on disk under each venv, symlinks not followed (the overlay's torch lives in the "
                           "main venv)"}
    res["seconds_total"] = round(time.time() - t_start, 1)
    out = Path(args.out)
    sys.path.insert(0, str(ROOT))
    from bench import provenance
    provenance.write_result(out, "nir_interop", res, write_markdown(res), __file__,
                            extra=["commands.train", "commands.convert", "bench/crosschecks/nir_interop_worker.py",
                                   "bench/crosschecks/worker_tools.py", "docs/nir_conventions.md"])
    print(f"wrote {out / 'nir_interop.json'} and {out / 'nir_interop.md'} ({res['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
