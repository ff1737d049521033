"""Which results in bench/results/ are stale (their measured sources changed since they were measured, see
bench/provenance.py), and the commands that measure them again; with --run, runs those commands one after another.

usage: .venv/bin/python bench/stale.py [--run]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402 (needs ROOT on sys.path)


def stale() -> list[tuple[str, str, list[str]]]:
    """(result name, bench script, changes) of every stale result, in name order."""
    out = []
    for path in sorted(provenance.RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        prov = res.get("provenance") if isinstance(res, dict) else None
        if prov is None:
            out.append((path.stem, "?", ["no provenance entry (measured before bench/provenance.py)"]))
            continue
        changes = provenance.changes_since(prov)
        if changes:
            out.append((path.stem, prov["script"], changes))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run the benches of the stale results")
    a = ap.parse_args()
    rows = stale()
    for name, script, changes in rows:
        print(f"{name}: stale ({len(changes)} changes: {', '.join(changes[:4])}{' ...' if len(changes) > 4 else ''})"
              f"; .venv/bin/python {script}")
    if not rows:
        print("every result in bench/results/ is fresh")
    if a.run:
        for script in dict.fromkeys(s for _, s, _ in rows if s != "?"):
            print(f"running {script}", flush=True)
            r = subprocess.run([sys.executable, str(ROOT / script)], cwd=ROOT)
            if r.returncode:
                print(f"{script} failed ({r.returncode})")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
