"""spk-report: energy report of a Spikformer checkpoint.

    spk-report model.pt [--preset NAME] [--data digits|cifar10:DIR|npz:FILE] [--samples N]
               [--energy-model cmos45|loihi|FILE.json] [--ssa-order auto|kv_first|qk_first]
               [--ssa binary|graded] [--mode float|fixed] [--target nir|loihi] [--seed S]
               [--device cpu|cuda] [--batch-size B] [--no-progress] -o DIR

Writes energy.json, energy.csv, energy.md, firing_rates.png, energy_by_kind.png, snn_vs_ann.png and report.html
into DIR (each file atomically; nothing is written if the run fails). The samples are the first N of a seeded
permutation of the data set's test split; the same arguments give byte-identical files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from spikformer.cli_support import UserError, add_common_args, default_device, run_cli

PROG = "spk-report"


def build_parser() -> argparse.ArgumentParser:
    from spikformer.data import SPEC_HELP
    from spikformer.presets import PRESETS

    from .energy_models import BUILTIN_MODELS
    from .report import MODES, TARGETS

    p = argparse.ArgumentParser(prog=PROG, description="Count the activity of a converted Spikformer on sample "
                                "images and report its energy under an energy model and the literature's "
                                "conventions.")
    p.add_argument("checkpoint", help="checkpoint file (spk-train output, or an official state dict with --preset)")
    p.add_argument("--preset", default=None, help=f"architecture for a bare state dict: {', '.join(sorted(PRESETS))}")
    p.add_argument("--data", default="digits", help=f"data spec (default digits): {SPEC_HELP}")
    p.add_argument("--samples", type=int, default=64, help="test images to run (default 64)")
    p.add_argument("--energy-model", default=None,
                   help=f"{' | '.join(sorted(BUILTIN_MODELS))} | FILE.json (default: cmos45 for --target nir, "
                        f"loihi for --target loihi)")
    p.add_argument("--ssa-order", default="auto", choices=("auto", "kv_first", "qk_first"),
                   help="product order of the SSA decomposition (default auto: the cheaper one)")
    p.add_argument("--ssa", "--ssa-form", dest="ssa_form", default=None, choices=("binary", "graded"),
                   help="SSA lowering (the same option as spk-convert's and spk-parity's --ssa): binary spikes and "
                        "threshold neurons, or Loihi 2 graded spikes, product neurons and graded residual relays "
                        "(default: graded for --target loihi, as spk-convert exports it; binary for nir)")
    p.add_argument("--mode", default=None, choices=sorted(MODES),
                   help="float: reference semantics, float64; fixed: Loihi fixed point, the network spk-convert "
                        "exports (default: fixed for --target loihi, float for nir)")
    p.add_argument("--target", default="nir", choices=sorted(TARGETS), help="back end (default nir)")
    p.add_argument("--seed", type=int, default=0, help="seed for the data split and the sample choice (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, default=16, help="images per simulator batch (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_common_args(p)
    return p


def _run(args: argparse.Namespace) -> int:
    import torch

    from convert.pipeline import input_grid_of
    from spikformer.checkpoint import load_checkpoint
    from spikformer.data import load_dataset_with_info

    from .energy_models import load_energy_model
    from .report import DEFAULT_ENERGY_MODEL, _tensor_sha256, build_report, sha256_file, write_files

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} exists and is not a directory")
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    from .report import MODES
    loihi = args.target == "loihi"  # defaults: what spk-convert --target loihi exports, in Loihi arithmetic
    args.mode = args.mode or ("fixed" if loihi else "float")
    args.ssa_form = args.ssa_form or ("graded" if loihi else "binary")
    if args.target not in MODES[args.mode][2]:
        raise UserError(f"--mode {args.mode} runs on --target {' or '.join(MODES[args.mode][2])}, not "
                        f"{args.target}")
    energy_model = load_energy_model(args.energy_model or DEFAULT_ENERGY_MODEL.get(args.target, "cmos45"))
    device = args.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    if device.startswith("cuda"):
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(args.seed)

    model, config, meta = load_checkpoint(args.checkpoint, preset=args.preset, device="cpu")
    split, info = load_dataset_with_info(args.data, config.img_size, config.in_channels, seed=args.seed,
                                         num_classes=config.num_classes)
    n_test = len(split.y_test)
    if n_test == 0:
        raise UserError(f"data {args.data!r} has no test images")
    n = min(args.samples, n_test)
    perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))[:n].sort().values
    images, labels = split.x_test[perm], split.y_test[perm]
    data = {"spec": args.data, "name": info.get("name"), "split": info.get("split"),
            "split_seed": info.get("split_seed"), "test_images": n_test,
            "selection": f"{n} of {n_test} test images: first {n} of a permutation seeded with {args.seed}"
                         + (f" (asked for {args.samples})" if args.samples > n_test else ""),
            "images_sha256": _tensor_sha256(images)}
    checkpoint = {"checkpoint": Path(args.checkpoint).name, "sha256": sha256_file(args.checkpoint),
                  "preset": args.preset or meta.get("preset"), "source": meta.get("source"),
                  "trained_test_accuracy": meta.get("test_accuracy"),
                  "trained_on": (meta.get("dataset") or {}).get("spec") if isinstance(meta.get("dataset"), dict)
                  else meta.get("dataset")}  # metadata of a checkpoint from elsewhere may hold anything
    res = build_report(model, config, images=images, labels=labels, energy_model=energy_model,
                       checkpoint=checkpoint, data=data, ssa_order=args.ssa_order, ssa_form=args.ssa_form,
                       mode=args.mode,
                       target=args.target, seed=args.seed, device=device, batch_size=args.batch_size,
                       progress=not args.no_progress,
                       input_value_grid=input_grid_of(meta))
    paths = write_files(out, res.files)
    t = res.report["totals"]
    print(f"{PROG}: {n} samples, energy model {energy_model.name}, mode {args.mode}, target {args.target}")
    print(f"  event-based  {t['event_pj'] / 1e6:.4g} uJ per inference (SSA decomposition "
          f"{t['event_ssa_decomposition_pj'] / 1e6:.4g} uJ)")
    print(f"  paper        {t['paper_pj'] / 1e6:.4g} uJ")
    print(f"  Spikingformer {t['spikingformer_pj'] / 1e6:.4g} uJ")
    print(f"  ANN          {t['ann_pj'] / 1e6:.4g} uJ")
    print(f"  wrote {len(paths)} files to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
