"""Console scripts of the spikformer package.

spk-train: train a Spikformer (a preset, or a preset changed by --layout/--depth/--dim/...) on a data set and
write one checkpoint file.

    spk-train --preset digits-2-64 --data digits --out runs/demo/model.pt [--epochs N] [--lr LR]
              [--batch-size B] [--seed S] [--device cuda|cpu] [--no-progress] [--debug]
              [--layout L] [--depth N] [--dim D] [--heads H] [--mlp-ratio R] [--time-steps T] [--img-size S]
              [--num-classes K] [--in-channels C] [--pool-stages P] [--normalize none|cifar|imagenet|M/S]

spk-eval: load a checkpoint (ours, or an official one: architecture inferred) and print its test accuracy.

    spk-eval model.pt [--data SPEC] [--preset NAME] [--heads H] [--time-steps T] [--img-size S]
             [--normalize N] [--seed S] [--device cuda|cpu] [--debug]      (--checkpoint FILE: the same)

Errors (unknown preset, bad data spec, unusable output path) are one line on stderr with a nonzero exit code;
the checkpoint is written atomically, so a failed run leaves no output file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ground.cli import add_common_args, run_cli
from ground.errors import UserError
from spikformer.presets import DEFAULT_PRESET, PRESETS
from spikformer.sdt_presets import ALL_SDT_PRESETS
from spikformer.train import default_device

from .data_args import (BUILT_IN, DATASET_RECORD, add_data_arguments, model_data_config, open_split,
                        streamed_dataset_record, stream)
from .options import add_source_arguments, source_arguments
from .train_config import add_architecture_arguments, training_architecture, training_data_config

PROG = "spk-train"
EVAL_PROG = "spk-eval"


def build_parser() -> argparse.ArgumentParser:
    from spikformer.train import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR

    p = argparse.ArgumentParser(prog=PROG, description="Train a Spikformer and save it as one checkpoint file.")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"model configuration (default {DEFAULT_PRESET}); one of: {', '.join(sorted(PRESETS))}; "
                        f"Spike-driven Transformer: {', '.join(ALL_SDT_PRESETS)}")
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="checkpoint file to write (e.g. runs/demo/model.pt)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"AdamW peak learning rate (default {DEFAULT_LR})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"batch size (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="seed for the data split, init and shuffling (default 0)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars; one line per epoch instead")
    add_architecture_arguments(p)
    add_common_args(p)
    return p


def _run(args: argparse.Namespace) -> int:
    # Check everything cheap before the (long) training so a mistake fails fast.
    arch = training_architecture(args)
    config = arch.config
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'model.pt'}")
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")

    from spikformer.checkpoint import library_versions, save_checkpoint
    from spikformer.data import load_dataset_with_info
    from spikformer.datasets import open_dataset, parse_dataset_spec
    from spikformer.train import resolve_device, train

    device = resolve_device(args.device or default_device())
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    kind, path_arg, _ = parse_dataset_spec(args.data)
    if kind in BUILT_IN:  # small, in memory, as every digits checkpoint so far was trained (byte-identical)
        data = load_dataset_with_info(args.data, config.img_size, config.in_channels, seed=args.seed,
                                      num_classes=config.num_classes, T=config.T)
        info, sets = data[1], None
        data_config = training_data_config(args, config)  # after the data: a missing data set is the first error
    else:  # streamed from disk: never whole in memory
        try:
            data_config = training_data_config(args, config)
        except UserError:  # a data set that is not there is the first error, as for the built-in sets
            path = Path(path_arg.split(":")[0])
            if not path.exists():
                raise UserError(f"data spec {args.data!r}: {path} does not exist") from None
            raise
        sets = tuple(open_dataset(args.data, config, data_config, split, args.seed, args.skip_bad)
                     for split in ("train", "test"))
        data, info = None, streamed_dataset_record(args.data, config, sets)
    print(f"{PROG}: preset {args.preset}, data {args.data} ({info['n_train']} train / {info['n_test']} test), "
          f"{args.epochs} epochs on {device}", flush=True)
    print(f"{PROG}: architecture: {arch.describe()}")
    print(f"{PROG}: input: {data_config.describe()}")
    res = train(config, args.data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                device=str(device), progress=not args.no_progress, data=data, data_config=data_config,
                datasets=sets, workers=args.workers)
    if sets is not None:
        info = streamed_dataset_record(args.data, config, sets, res.data_info.get("max_value"))
    metadata = {
        "preset": args.preset if not arch.overridden else arch.preset,
        "dataset": {k: info[k] for k in DATASET_RECORD if k in info},
        "split_seed": info["split_seed"],
        "train_seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "test_accuracy": res.test_accuracy,
        "history": [{k: (round(v, 6) if isinstance(v, float) and k != "seconds" else v)
                     for k, v in h.items() if k != "seconds"} for h in res.history],
        "num_parameters": res.num_parameters,
        "device": device.type,
        "versions": library_versions(),
        "created_by": "spikformer-deploy spk-train",
    }
    if arch.overridden:  # a plain preset's checkpoint stays as it was (its preset names every value)
        metadata["base_preset"] = args.preset
        metadata["architecture_origin"] = arch.origin
    if data_config.normalized:  # unnormalised: nothing written, raw [0, 1] input is what an absent entry means
        metadata["data_config"] = data_config.to_dict()
    save_checkpoint(out, res.model, metadata, config=config)
    n_test = info["n_test"]
    print(f"test accuracy: {100 * res.test_accuracy:.2f} % ({round(res.test_accuracy * n_test)}/{n_test})")
    print(f"parameters: {res.num_parameters:,}")
    print(f"training time: {res.seconds:.1f} s")
    print(f"checkpoint: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), _run, argv)


def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=EVAL_PROG, description="Evaluate a Spikformer checkpoint's test accuracy.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (spk-train output or an official checkpoint)")
    p.add_argument("--checkpoint", dest="checkpoint_option", metavar="CHECKPOINT",
                   help="the same as the positional argument (give one of them)")
    add_source_arguments(p)
    add_data_arguments(p, default=None, help_default="the one stored in the checkpoint, else digits")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--seed", type=int, default=None,
                   help="split seed (default: the one stored in the checkpoint, else 0)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)")
    add_common_args(p)
    return p


def _run_eval(args: argparse.Namespace) -> int:
    from spikformer.checkpoint import describe_loaded, load_checkpoint
    from spikformer.model import count_parameters
    from spikformer.train import configure_threads, evaluate_batches, resolve_device

    if (args.checkpoint is None) == (args.checkpoint_option is None):
        raise UserError("give the checkpoint once: as the first argument or as --checkpoint FILE"
                        + (f" (got {args.checkpoint} and {args.checkpoint_option})" if args.checkpoint else ""))
    path = args.checkpoint or args.checkpoint_option
    device = resolve_device(args.device or default_device())
    if device.type == "cpu":
        configure_threads()
    model, config, meta = load_checkpoint(path, preset=args.preset, device=device, weights=args.weights,
                                          **source_arguments(args))
    for line in describe_loaded(config, meta):
        print(line)
    stored = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    spec = args.data or stored.get("spec") or "digits"
    seed = args.seed if args.seed is not None else (meta.get("split_seed") if isinstance(meta.get("split_seed"), int)
                                                    else 0)
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    dataset, opener = open_split(spec, config, model_data_config(meta), "test", seed, args.skip_bad)
    samples = stream(dataset, opener, None, args.workers)
    correct, n = evaluate_batches(model, samples.batches(args.batch_size))
    skipped = int(dataset.info.get("skipped", 0) or 0)
    acc = correct / n if n else float("nan")
    print(f"test accuracy: {100 * acc:.2f} % ({correct}/{n}) on {spec} (split seed {seed}; "
          f"{dataset.info.get('split_rule')})" + (f"; {skipped} undecodable samples skipped" if skipped else ""))
    print(f"parameters: {count_parameters(model):,}")
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(EVAL_PROG, build_eval_parser(), _run_eval, argv)


if __name__ == "__main__":
    sys.exit(main())
