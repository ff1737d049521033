"""Mutation check: each mutation below is one small, meaningful change to the code (a wrong rounding, an
off-by-one, a swapped constant, a counter that misses a case); the fast tests must fail on every one of them.
A mutation they survive is a claim no test checks.

(The sample period T + max_depth + 1 is not mutated here: one step shorter is an equivalent mutant for the
simulator, whose logical time has no period; only a Lava run could show it, and those are the slow tests.)

Each mutation runs in a fresh copy of the repository's packages and tests (a temporary directory; the working
tree is never touched), with the mutated line replaced, and runs FAST_TESTS there (stopping at the first
failure). The unmutated copy runs first and must pass, else the table would mean nothing. Writes
bench/results/mutations.json and .md: per mutation its module, what it changes, whether it was killed, the first
failing test, and seconds.

    .venv/bin/python bench/fuzzing/mutations.py [--only ID,ID] [--out bench/results]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ground", "spikformer", "convert", "hardware", "hw_backends", "sim", "analysis", "commands", "tests")
FAST_TESTS = ["tests/test_fixed_point_oracle.py", "tests/test_known_answers.py",
              "tests/test_lossless_fixed_point.py", "tests/test_loihi_timing.py",
              "tests/test_loihi_resources.py::test_per_core_counts_match_brute_force",
              "tests/test_loihi_resources.py::test_the_searchs_output_axon_max_and_sum_match_brute_force",
              "tests/test_loihi_resources.py::test_placement_obeys_every_limit_and_each_limit_binds_somewhere",
              "tests/test_convert_exact.py", "tests/test_pass_ssa.py", "tests/test_nir_io.py",
              "tests/test_schedule.py", "tests/test_loihi_compile.py", "tests/test_energy.py",
              "tests/test_lossless_models.py", "tests/test_numeric_edges.py", "tests/test_sdt_lowering.py"]

# (id, file, exact text (must occur once), replacement, what the mutation breaks)
MUTATIONS = [
    ("quantize-threshold-tie", "hw_backends/loihi/quantize.py", "        vth = 2 * c - 1\n", "        vth = 2 * c\n",
     "threshold neurons: the -1 that makes v > vth<<6 fire at x >= ceil(theta) (the tie rule)"),
    ("quantize-lif-exact-tie", "hw_backends/loihi/quantize.py", "            vth = lam * theta / 64 - 1\n",
     "            vth = lam * theta / 64\n", "LIF with dyadic weights: the tie rule of the exact path"),
    ("quantize-lambda", "hw_backends/loihi/quantize.py", "            lam = (64 * vth + 1) / theta\n",
     "            lam = (64 * vth) / theta\n", "LIF scale lambda = (64 vth + 1) / theta loses its +1"),
    ("dense-mixed-even", "hw_backends/loihi/dense_weights.py", "    if mixed:\n        t *= 2\n",
     "    if mixed:\n        t *= 1\n", "mixed-sign mantissas no longer even (lava drops their lowest bit)"),
    ("timing-delay", "hw_backends/loihi/timing.py",
     "        d = depth[p.post] - depth[p.pre] - 1\n        if d > L.MAX_DELAY:\n            raise L.LoihiLimitError(f\"{p.synapse} ({p.pre} -> {p.post})\", \"synaptic delay (6 bit)\", d",
     "        d = depth[p.post] - depth[p.pre]\n        if d > L.MAX_DELAY:\n            raise L.LoihiLimitError(f\"{p.synapse} ({p.pre} -> {p.post})\", \"synaptic delay (6 bit)\", d",
     "every projection's delay one step too long"),
    ("fixed-decay-floor", "sim/fixed_point.py", "    return torch.trunc(x * factor / 4096)\n",
     "    return torch.floor(x * factor / 4096)\n", "Loihi's decay rounds toward zero, not down"),
    ("fixed-threshold", "sim/fixed_point.py", "    s = vv > (node.vth * 64)\n", "    s = vv >= (node.vth * 64)\n",
     "LIF fires on v > vth << 6 (strict)"),
    ("fixed-du-offset", "sim/fixed_point.py", "_decay(u.to(a.dtype), 4096 - (node.du + 1))",
     "_decay(u.to(a.dtype), 4096 - node.du)", "u decays by 4096 - (du + 1) (lava's ds_offset = 1)"),
    ("fixed-shift-floor", "sim/fixed_point.py", "        return y if e > 0 else y.floor_()\n",
     "        return y if e > 0 else y.trunc_()\n", "a negative weight exponent shifts right arithmetically (floor)"),
    ("fixed-wrap-count", "sim/fixed_point.py",
     '    state["u_wrapped"] = state.get("u_wrapped", 0) + int(high.sum()) + int(low.sum())\n',
     '    state["u_wrapped"] = state.get("u_wrapped", 0) + int(low.sum())\n',
     "the u-wrap counter misses wraps above +2**23 (the bug the oracle found)"),
    ("input-encoding", "hardware/loihi/numerics.py", "    return (images.clamp(0, 1) * input_scale).round()\n",
     "    return (images.clamp(0, 1) * input_scale).floor()\n", "graded input payload rounded down, not to nearest"),
    ("parity-mismatch", "analysis/parity.py", "        self.mismatches += int((ref != sim).sum())\n",
     "        self.mismatches += int((ref > sim).sum())\n", "the mismatch counter misses spikes the simulator adds"),
    ("activity-fanout", "analysis/activity.py", "    return torch.round(fan[0])\n", "    return torch.round(fan[0]) + 1\n",
     "every input position's fan-out one connection too many"),
    ("energy-ac-mac", "analysis/energy.py",
     "        syn = (s.ac_ops * model.ac_pj + s.mac_ops * model.mac_pj) / n\n",
     "        syn = (s.ac_ops * model.mac_pj + s.mac_ops * model.ac_pj) / n\n", "AC and MAC energies swapped"),
    ("nir-threshold", "hw_backends/nir/file_format.py", "    return np.nextafter(v32, np.float32(-np.inf))\n",
     "    return v32\n", "NIR's v > threshold stores the model's threshold itself (loses the v >= tie)"),
    ("placement-limit", "hw_backends/loihi/placement.py",
     "        return all(self.worst[k] <= allowed[k] for k in LIMIT_NAMES)\n",
     "        return all(self.worst[k] <= allowed[k] + 1 for k in LIMIT_NAMES)\n", "a core may exceed a limit by one"),
    ("synapse-memory-words", "hw_backends/loihi/connectivity.py", "        return -(-x // W) * W\n",
     "        return x // W * W\n", "synapse memory rounded down to whole words, not up"),
    ("quantize-readout-bias-range", "hw_backends/loihi/quantize.py",
     "        if bias_exp > L.BIAS_EXP_MAX:  # |bias per step|",
     "        if False:  # |bias per step|", "the readout's bias exponent beyond 3 bits, no longer refused"),
    ("sdt-spike-product", "convert/trace_to_ir.py", "        self.g.add(ir.Threshold(name, where, threshold=1.5), *syns)\n",
     "        self.g.add(ir.Threshold(name, where, threshold=0.5), *syns)\n",
     "the Spike-driven Transformer's product of two spike tensors read as OR, not AND"),
    ("sdt-maxpool-padding", "convert/passes/maxpool_graded.py", "        pad_bias = -(2.0 * bound + 1.0)\n",
     "        pad_bias = 0.0 * bound\n", "the graded max-pool's padded taps count as 0, not as -infinity"),
    ("sdt-plif-tau", "convert/trace_to_ir.py", "        tau = 1.0 / float(torch.sigmoid(m.w.detach().double().cpu()))\n",
     "        tau = 1.0 / float(torch.sigmoid(m.w.detach().double().cpu())) + 0.01\n",
     "a ParametricLIF's tau off by 0.01 from 1 / sigmoid(w)"),
]


def _copy(dst: Path) -> None:
    for p in PACKAGES:
        shutil.copytree(ROOT / p, dst / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml",):
        shutil.copy(ROOT / f, dst / f)


def _run(copy: Path, timeout: float) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *FAST_TESTS],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired:
        out, rc = "timeout", -1
    failed = re.findall(r"^FAILED (\S+)", out, re.M) or re.findall(r"^ERROR (\S+)", out, re.M)
    return rc, failed[0] if failed else ("timeout" if rc == -1 else ""), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated mutation ids")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not a.only or m[0] in a.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutations_") as tmp:
        base = Path(tmp) / "base"
        _copy(base)
        rc, failed, base_secs = _run(base, a.timeout)
        print(f"unmutated: rc {rc} in {base_secs:.0f} s {failed}", flush=True)
        if rc != 0:
            print("the unmutated fast tests fail: no mutation result would mean anything", file=sys.stderr)
            return 1
        for mid, rel, old, new, what in chosen:
            work = Path(tmp) / mid
            _copy(work)
            text = (work / rel).read_text()
            if text.count(old) != 1:
                rows.append({"id": mid, "file": rel, "what": what, "killed": None,
                             "error": f"the text to mutate occurs {text.count(old)} times"})
                print(f"{mid}: not applied (occurs {text.count(old)} times)", flush=True)
                continue
            (work / rel).write_text(text.replace(old, new))
            rc, failed, secs = _run(work, a.timeout)
            rows.append({"id": mid, "file": rel, "what": what, "killed": rc != 0, "killed_by": failed,
                         "seconds": round(secs, 1)})
            print(f"{mid}: {'killed by ' + failed if rc else 'SURVIVED'} ({secs:.0f} s)", flush=True)
            shutil.rmtree(work)
    sys.path.insert(0, str(ROOT))
    from bench import provenance
    measured = sorted({t.split("::")[0] for t in FAST_TESTS} | {"tests/conftest.py"} | {m[1] for m in MUTATIONS})
    result = {"fast_tests": FAST_TESTS, "unmutated_seconds": round(base_secs, 1), "mutations": rows,
              "killed": sum(1 for r in rows if r.get("killed")), "total": len(rows)}
    md = ["# Mutation check (`bench/fuzzing/mutations.py`)", "",
          f"Each mutation applied alone to a copy of the code; the fast tests "
          f"({len(FAST_TESTS)} files or tests, listed in mutations.json; {base_secs:.0f} s unmutated, which "
          f"pass) run with -x. Killed {result['killed']} of {result['total']}.", "",
          "| mutation | module | what it breaks | killed by | s |", "|---|---|---|---|---:|"]
    for r in rows:
        killed = r.get("killed_by") if r.get("killed") else ("**survived**" if r.get("killed") is False
                                                               else r.get("error"))
        md.append(f"| {r['id']} | `{r['file']}` | {r['what']} | `{killed}` | {r.get('seconds', '')} |")
    provenance.write_result(a.out, "mutations", result, "\n".join(md), __file__, measured)
    return 0 if result["killed"] == result["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
