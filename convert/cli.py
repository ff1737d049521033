"""spk-convert: a trained Spikformer checkpoint -> a hardware graph.

    spk-convert model.pt --target nir -o model.nir [--preset NAME] [--ssa-order auto|kv_first|qk_first]
                [--device cpu|cuda] [--debug]
    spk-convert --list-targets

Steps: load the checkpoint safely (torch.load weights_only; a bare state dict needs --preset), build the IR
(convert.frontend), lower it for the target (BatchNorm folded, max-pool as OR, residual streams, SSA as binary
threshold neurons in the cheaper or the requested product order, head as synapses + integrator), validate, and
let the target write its artifacts atomically. Any bad input (file, option, model) ends with one line on stderr,
a nonzero exit code and nothing written.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from spikformer.cli_support import UserError, add_common_args, run_cli

PROG = "spk-convert"
SSA_ORDERS = ("auto", "kv_first", "qk_first")


def build_parser() -> argparse.ArgumentParser:
    import hw_backends

    targets = ", ".join(n for n, _ in hw_backends.list_backends())
    p = argparse.ArgumentParser(prog=PROG, description="Convert a trained Spikformer checkpoint to a hardware graph.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (.pt) written by spk-train, or a state dict")
    p.add_argument("--target", default="nir", help=f"output target (default nir); one of: {targets}")
    kinds = ", ".join(f"a {hw_backends.get_backend(n).output_kind} for {n}" for n, _ in hw_backends.list_backends())
    p.add_argument("-o", "--output", help=f"output path ({kinds})")
    p.add_argument("--preset", default=None,
                   help="architecture of a bare state dict (e.g. cifar10-4-384); checkpoints from spk-train carry "
                        "their own")
    p.add_argument("--ssa-order", default="auto", choices=SSA_ORDERS,
                   help="SSA product order: auto picks the one with fewer neurons (default auto)")
    p.add_argument("--device", default="cpu", help="device for loading the checkpoint (default cpu); the "
                                                   "conversion itself runs in float64 on the CPU")
    p.add_argument("--list-targets", action="store_true", help="list the output targets and exit")
    for name, _ in hw_backends.list_backends():
        hw_backends.get_backend(name).add_arguments(p.add_argument_group(f"target {name}"))
    add_common_args(p)
    return p


def _fmt_count(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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


def _run(args: argparse.Namespace) -> int:
    import hw_backends

    if args.list_targets:
        for name, desc in hw_backends.list_backends():
            print(f"{name:8s} {desc}")
        for name, reason in sorted(hw_backends.unavailable().items()):
            print(f"{name:8s} (unavailable: {reason})")
        return 0
    if not args.checkpoint:
        raise UserError("give a checkpoint file (or --list-targets)")
    backend = hw_backends.get_backend(args.target)  # unknown target: fails before any work
    if not args.output:
        raise UserError(f"give an output path with -o (e.g. -o model{backend.default_suffix or '.out'})")
    out = backend.check_output(args.output)
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise UserError(f"checkpoint {ckpt} does not exist")
    if str(args.device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available here; use --device cpu")

    from convert.frontend import spikformer_to_ir
    from convert.pipeline import file_sha256, tag_input_grid
    from spikformer.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    model, cfg, meta = load_checkpoint(ckpt, preset=args.preset, device=args.device)
    t1 = time.perf_counter()
    frontend = spikformer_to_ir(model)
    tag_input_grid(frontend, meta)
    t2 = time.perf_counter()
    options = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "output", "list_targets", "debug")}
    graph = backend.prepare(frontend, options)
    graph.validate()
    t3 = time.perf_counter()
    info = {"name": ckpt.name, "checkpoint_sha256": file_sha256(ckpt),
            "preset": args.preset or meta.get("preset"), "config": cfg.to_dict(),
            "dataset": meta.get("dataset"), "test_accuracy": meta.get("test_accuracy"),
            "checkpoint_source": meta.get("source"), "converter": PROG,
            "options": {k: v for k, v in options.items() if k != "target"}}
    summary = backend.export(graph, info, out, options)
    t4 = time.perf_counter()

    shapes = graph.shapes()
    neurons = sum(math.prod(shapes[n.name]) for n in graph.nodes.values() if n.spiking)
    print(f"{PROG}: {ckpt} ({info['preset'] or 'config from checkpoint'}, {cfg.depth} blocks x {cfg.embed_dim}, "
          f"T={cfg.T}) -> target {backend.name}")
    print(f"  time: load {t1 - t0:.2f} s, frontend {t2 - t1:.2f} s, lower {t3 - t2:.2f} s, export {t4 - t3:.2f} s")
    print(f"  IR: {len(graph.nodes)} nodes ({_fmt_count(graph.summary())}), {len(graph.edges)} edges, "
          f"{neurons:,} spiking neurons")
    if "nir_nodes" in summary:
        print(f"  NIR: {sum(summary['nir_nodes'].values())} nodes ({_fmt_count(summary['nir_nodes'])}), "
              f"{summary['nir_edges']} edges")
    for line in ssa_summary(graph):
        print(f"  {line}")
    for path in summary.get("artifacts", []):
        size = Path(path).stat().st_size if Path(path).is_file() else None
        print(f"  wrote {path}" + (f" ({_size(size)})" if size is not None else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
