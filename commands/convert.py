"""spk-convert: a trained Spikformer checkpoint -> a hardware graph.

    spk-convert model.pt --target NAME [-o OUT] [--preset NAME] [--weights model|ema] [--ssa auto|binary|graded]
                [--ssa-order auto|kv_first|qk_first] [the target's own flags, e.g. --weight-bits 8|16]
                [--device cpu|cuda] [--debug]
    spk-convert --list-targets      (the targets, hw_backends.base's registry)

Steps (hw_backends.conversion.convert, the route every command takes): load the checkpoint safely
(torch.load weights_only; a bare state dict needs --preset), build the IR (convert.frontend), let the target
lower it (BatchNorm folded, max-pool as OR, residual streams, SSA in the cheaper or the requested form and
product order, head as synapses + integrator) and, for a chip, quantise, schedule and place it; then the
target writes its artifacts atomically. Any bad input (file, option, model) ends with one line on stderr,
a nonzero exit code and nothing written.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from ground.cli import add_common_args, count_text, run_cli
from ground.errors import UserError
from hw_backends import base as targets
from hw_backends.conversion import convert

from .options import add_conversion_arguments, conversion_options

PROG = "spk-convert"


def build_parser() -> argparse.ArgumentParser:
    backends = targets.backends()
    p = argparse.ArgumentParser(prog=PROG, description="Convert a trained Spikformer checkpoint to a hardware graph.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (.pt) written by spk-train, or a state dict")
    default = targets.default_target("spk-convert")
    p.add_argument("--target", default=default,
                   help=f"output target (default {default}); one of: {', '.join(b.name for b in backends)}")
    kinds = ", ".join(f"a {b.output_kind} for {b.name}" for b in backends)
    beside = " or ".join(f"{default_output(Path('model.pt'), b)}{'/' if b.output_kind == 'dir' else ''}"
                         for b in backends)
    p.add_argument("-o", "--output", help=f"output path ({kinds}; default: beside the checkpoint, {beside})")
    p.add_argument("--device", default="cpu", help="device for loading the checkpoint (default cpu); the "
                                                   "conversion itself runs in float64 on the CPU")
    p.add_argument("--list-targets", action="store_true", help="list the output targets and exit")
    add_conversion_arguments(p)
    add_common_args(p)
    return p


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def ssa_summary(graph) -> list[str]:
    """One line per distinct SSA lowering: chosen order and the per-step cost of both orders."""
    lines, seen = [], {}
    for name, info in graph.metadata.get("ssa", {}).items():
        costs = info.get("cost_per_step", {})
        key = (info.get("order"), info.get("requested_order"), tuple(sorted((o, c.get("neurons"), c.get("synapses"))
                                                                         for o, c in costs.items())))
        seen.setdefault(key, []).append(name)
    for (order, requested, costs), names in seen.items():
        where = names[0] if len(names) == 1 else f"{len(names)} blocks ({names[0]} ...)"
        parts = [f"{o} {n:,} neurons / {s:,} synapses" for o, n, s in costs]
        lines.append(f"SSA {where}: {order} ({requested or 'auto'}); per block and step: " + "; ".join(parts))
    return lines


def default_output(ckpt: Path, backend) -> Path:
    """Beside the checkpoint: model.pt -> model + the target's default_suffix (model.nir, model_loihi/)."""
    return ckpt.with_name(ckpt.stem + (backend.default_suffix or f".{backend.name}"))


def _run(args: argparse.Namespace) -> int:
    if args.list_targets:
        for name, desc in targets.list_backends():
            print(f"{name:8s} {desc}")
        for name, reason in sorted(targets.unavailable().items()):
            print(f"{name:8s} (unavailable: {reason})")
        return 0
    if not args.checkpoint:
        raise UserError("give a checkpoint file (or --list-targets)")
    backend = targets.get_backend(args.target)  # unknown target: fails before any work
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise UserError(f"checkpoint {ckpt} does not exist")
    out = backend.check_output(args.output or default_output(ckpt, backend))
    if out.exists():
        print(f"{PROG}: {out} exists and will be replaced when the conversion succeeds")
    if str(args.device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    options = conversion_options(args, args.target, device=args.device)

    t0 = time.perf_counter()
    build = convert(ckpt, options, progress=True)
    t1 = time.perf_counter()
    summary = build.export(out, converter=PROG)
    t2 = time.perf_counter()

    graph, cfg = build.lowered, build.source.config
    shapes = graph.shapes()
    neurons = sum(math.prod(shapes[n.name]) for n in graph.nodes.values() if n.spiking)
    preset = build.source.facts()["preset"]
    matched = " matched by parameter names and shapes" if build.source.metadata.get("preset_matched") else ""
    print(f"{PROG}: {ckpt} ({preset or 'config from checkpoint'}{matched}, {cfg.depth} blocks x {cfg.embed_dim}, "
          f"T={cfg.T}) -> target {backend.name}: {out}")
    for line in build.source.describe():
        print(f"  {line}")
    print(f"  time: load, frontend and build {t1 - t0:.2f} s, export {t2 - t1:.2f} s")
    print(f"  IR: {len(graph.nodes)} nodes ({count_text(graph.summary())}), {len(graph.edges)} edges, "
          f"{neurons:,} spiking neurons")
    for line in [*backend.describe_artifacts(summary), *ssa_summary(graph), *backend.describe_build(summary, out)]:
        print(f"  {line}")
    for path in summary.get("artifacts", []):
        size = Path(path).stat().st_size if Path(path).is_file() else None
        print(f"  wrote {path}" + (f" ({_size(size)})" if size is not None else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
