"""Running a bench's per-preset worker in a fresh process (`<script> --worker PRESET [args]`) and reading the JSON
line it prints; a timeout or a failure becomes a row with "error" (standard library only; imported by the timing
benches beside this file)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def run_preset_workers(script, presets, timeout: int, cwd, extra_args=(), label: str = "bench") -> list[dict]:
    """One row per preset: the worker's JSON, with "subprocess_wall_s" (the process's wall time), or
    {"preset", "error"}."""
    rows = []
    for p in presets:
        print(f"[{label}] {p} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, str(script), "--worker", p, *extra_args]
        t = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            rows.append({"preset": p, "error": f"timed out after {timeout} s"})
            continue
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not line:
            tail = " | ".join(r.stderr.strip().splitlines()[-3:])
            rows.append({"preset": p, "error": f"exit {r.returncode}: {tail}"})
            continue
        row = json.loads(line[-1])
        row["subprocess_wall_s"] = round(time.perf_counter() - t, 2)
        rows.append(row)
    return rows


def add_preset_arguments(ap, presets, results_dir) -> None:
    """The flags every per-preset bench takes: --presets, --timeout, --out, and the hidden --worker."""
    ap.add_argument("--presets", default=",".join(presets))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per preset")
    ap.add_argument("--out", default=str(results_dir))
    ap.add_argument("--worker", help=argparse.SUPPRESS)


def run_presets_and_write(args, script, root, name: str, markdown, extra_args=(), extra_env=None,
                          extra_json=None) -> int:
    """Runs every preset of `args.presets` in its own worker process, then writes `<name>.json` (environment,
    `extra_json`, rows) and `<name>.md` (`markdown(rows, env)`) into `args.out` atomically and prints the md;
    exit status 1 when a preset failed."""
    env = {"cpus": os.cpu_count(), "python": platform.python_version(), **(extra_env or {}),
           "loadavg_start": [round(x, 1) for x in os.getloadavg()]}
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = run_preset_workers(script, presets, args.timeout, root, extra_args, Path(script).stem)
    env["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    sys.path.insert(0, str(root))
    from bench import provenance
    md = markdown(rows, env)
    provenance.write_result(args.out, name, {"env": env, **(extra_json or {}), "results": rows}, md, script)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1
