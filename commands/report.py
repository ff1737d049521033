"""spk-report: energy report of a Spikformer checkpoint.

    spk-report model.pt [--preset NAME] [--data digits|cifar10:DIR|npz:FILE] [--samples N]
               [--energy-model cmos45|loihi|FILE.json] [--ssa auto|binary|graded] [--ssa-order ...]
               [the target's own flags, e.g. --weight-bits 8|16] [--mode float|fixed] [--target NAME]
               [--seed S] [--device cpu|cuda] [--batch-size B] [--no-progress]
               [--ray [ADDRESS] [--ray-shards N] [--ray-retries N]] -o DIR

The network is the one spk-convert exports with the same options (hw_backends.conversion.convert). Writes
energy.json, energy.csv, energy.md, firing_rates.png, energy_by_kind.png, snn_vs_ann.png and report.html into
DIR (all replaced together; nothing is written if the run fails). The samples are the first N of a seeded
permutation of the data set's test split; the same arguments give byte-identical files, with or without --ray
(apart from energy.json's run.scale_out, which says how the run was spread).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from analysis.attention import attention_maps, attention_position
from analysis.attention import summary as attention_summary
from analysis.energy_models import BUILTIN_MODELS, load_energy_model
from analysis.render import chart_attention, render_all
from analysis.report import build_report
from ground.atomic import replace_files
from ground.cli import add_common_args, run_cli
from ground.errors import UserError
from hw_backends import base as targets
from hw_backends.conversion import convert
from .data_args import add_data_arguments, model_data_config, open_split, stream
from .options import add_conversion_arguments, conversion_options
from .ray_scaleout import add_ray_arguments, ray_device, ray_executor, ray_reads_data

PROG = "spk-report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Count the activity of a converted Spikformer on sample "
                                "images and report its energy under an energy model and the literature's "
                                "conventions.")
    p.add_argument("checkpoint", help="checkpoint file (spk-train output, or an official state dict with --preset)")
    add_data_arguments(p)
    p.add_argument("--samples", type=int, default=64, help="test images to run (default 64)")
    backends = targets.backends()
    p.add_argument("--energy-model", default=None,
                   help=f"{' | '.join(sorted(BUILTIN_MODELS))} | FILE.json (default: "
                        + ", ".join(f"{b.default_energy_model} for --target {b.name}" for b in backends) + ")")
    p.add_argument("--mode", default=None, choices=targets.run_modes(),
                   help="float: reference semantics, float64; fixed: the target's fixed point, the network "
                        "spk-convert exports (default: "
                        + ", ".join(f"{b.default_mode} for --target {b.name}" for b in backends) + ")")
    default = targets.default_target("spk-report")
    p.add_argument("--target", default=default, choices=[b.name for b in backends],
                   help=f"back end (default {default})")
    add_conversion_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed for the data split and the sample choice (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu; cpu with "
                                                  "--ray)")
    p.add_argument("--batch-size", type=int, default=16, help="images per simulator batch (default 16)")
    p.add_argument("--attention-samples", type=int, default=4,
                   help="draw the per-head SSA attention maps (Q K^T) of this many samples, simulation beside the "
                        "PyTorch reference, into attention.png and attention.json (default 4; 0: none)")
    p.add_argument("--attention-block", type=int, default=None, help="block of the attention maps (default: last)")
    p.add_argument("--attention-step", type=int, default=None, help="time step of the attention maps (default: last)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_ray_arguments(p)
    add_common_args(p)
    return p


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} exists and is not a directory")
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.attention_samples < 0:
        raise UserError(f"--attention-samples must be >= 0, got {args.attention_samples}")
    backend = targets.get_backend(args.target)
    args.mode = args.mode or backend.default_mode
    if args.mode not in backend.run_modes:
        raise UserError(f"--mode {args.mode} runs on --target {' or '.join(targets.targets_running(args.mode))}, "
                        f"not {args.target}")
    energy_model = load_energy_model(args.energy_model or backend.default_energy_model)
    device = ray_device(args)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    if device.startswith("cuda"):
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(args.seed)

    build = convert(args.checkpoint, conversion_options(args, args.target))
    for line in build.source.describe():
        print(f"{PROG}: {line}")
    config, meta = build.source.config, build.source.metadata
    if args.attention_samples > 0:  # checked before the run, not after it
        try:
            attention_position(config, args.attention_block, args.attention_step)
        except ValueError as e:
            raise UserError(str(e)) from None
    dataset, opener = open_split(args.data, config, model_data_config(meta), "test", args.seed, args.skip_bad)
    n_test = len(dataset)
    if n_test == 0:
        raise UserError(f"data {args.data!r} has no test images")
    n = min(args.samples, n_test)
    perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))[:n].sort().values
    samples = stream(dataset, opener, perm.tolist(), args.workers, shared=ray_reads_data(args))
    data = {"spec": args.data, "name": dataset.info.get("name"), "split": dataset.info.get("split_rule"),
            "split_seed": dataset.info.get("split_seed"), "test_images": n_test,
            "selection": f"{n} of {n_test} test images: first {n} of a permutation seeded with {args.seed}"
                         + (f" (asked for {args.samples})" if args.samples > n_test else "")}
    checkpoint = {"checkpoint": build.source.name, "sha256": build.source.sha256,
                  "preset": args.preset or meta.get("preset"), "preset_matched": bool(meta.get("preset_matched")),
                  "source": meta.get("source"), "architecture_origin": meta.get("architecture_origin"),
                  "data_config": meta.get("data_config"),
                  "trained_test_accuracy": meta.get("test_accuracy"),
                  "trained_on": (meta.get("dataset") or {}).get("spec") if isinstance(meta.get("dataset"), dict)
                  else meta.get("dataset")}  # metadata of a checkpoint from elsewhere may hold anything
    executor = ray_executor(args, PROG)
    with executor or contextlib.nullcontext():
        res = build_report(build, mode=args.mode, images=samples, labels=None, energy_model=energy_model,
                           checkpoint=checkpoint, data=data, seed=args.seed, device=device,
                           batch_size=args.batch_size, progress=not args.no_progress, executor=executor)
    files = render_all(res.report)
    if args.attention_samples > 0:
        k = min(args.attention_samples, n)
        first = samples.slice(0, k).materialize().images
        maps = attention_maps(build, args.mode, first, args.attention_block, args.attention_step)
        files["attention.png"] = chart_attention(maps, first)
        files["attention.json"] = (json.dumps(attention_summary(maps), indent=1) + "\n").encode()
    paths = replace_files(out, files)
    t = res.report["totals"]
    print(f"{PROG}: {n} samples, energy model {energy_model.name}, mode {args.mode}, target {args.target}")
    paper = res.report.get("paper_convention")  # set for a Spike-driven Transformer (no SSA decomposition)
    ssa = "" if paper else f" (SSA decomposition {t['event_ssa_decomposition_pj'] / 1e6:.4g} uJ)"
    print(f"  event-based  {t['event_pj'] / 1e6:.4g} uJ per inference{ssa}")
    print(f"  paper        {t['paper_pj'] / 1e6:.4g} uJ" + (f" ({paper} convention)" if paper else ""))
    print(f"  Spikingformer {t['spikingformer_pj'] / 1e6:.4g} uJ")
    print(f"  ANN          {t['ann_pj'] / 1e6:.4g} uJ")
    print(f"  wrote {len(paths)} files to {out}")
    if args.attention_samples > 0:
        print(f"  attention maps (block {maps['block']}, step {maps['step']}): "
              f"{maps['equal_entries']}/{maps['entries']} entries equal to the reference -> {out / 'attention.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
