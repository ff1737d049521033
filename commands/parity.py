"""spk-parity: the converted network against the PyTorch reference, layer by layer."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Sequence

import torch

from analysis.engine_crosscheck import make_sim_runner
from analysis.parity import (default_logit_atol, firing_rate_plot, parity_markdown, run_parity,
                             set_reference_determinism, summarize)
from ground.atomic import atomic_dir
from ground.cli import add_common_args, run_cli
from ground.errors import UserError
from hw_backends import base as targets
from hw_backends.conversion import convert
from .data_args import add_data_arguments, data_facts, model_data_config, open_split, stream
from .options import add_conversion_arguments, conversion_options
from .ray_scaleout import add_ray_arguments, ray_device, ray_executor, ray_reads_data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spk-parity", description=__doc__)
    p.add_argument("checkpoint")
    backends = targets.backends()
    default = targets.default_target("spk-parity")
    p.add_argument("--target", default=default, choices=[b.name for b in backends],
                   help=f"the target whose network is checked (default {default})")
    p.add_argument("--mode", choices=targets.run_modes(), default=None,
                   help="fixed (the target's integer arithmetic) or float (reference semantics, float64; must be "
                        "exact). Default: " + ", ".join(f"{b.default_mode} for {b.name}" for b in backends))
    add_data_arguments(p)
    p.add_argument("--samples", type=int, default=None, help="number of test samples (default: all)")
    p.add_argument("--engine", choices=["sim", *targets.engine_names()], default="sim",
                   help="what runs the converted network: sim (this project's simulator) or one of a target's "
                        "engines, compared exactly with the fixed-point simulator on the same samples: " + "; ".join(
                            f"{e} (--target {b.name}): {what}" for b in backends for e, what in b.engines.items()))
    p.add_argument("--device", default=None, help="device of the PyTorch reference and of the simulator (default: "
                                                  "cuda if available; cpu with --ray)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="data split seed")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="fail (exit 1) when prediction agreement is below this")
    p.add_argument("--min-layer-agreement", type=float, default=0.0,
                   help="fail (exit 1) when any layer's spike agreement is below this")
    p.add_argument("--logit-atol", type=float, default=None,
                   help="tolerance for |logit_ref - logit_sim| (default 1e-9 float, 0.5 fixed)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--out", required=True, help="output directory")
    add_conversion_arguments(p)
    for b in backends:
        if b.engines:
            b.add_engine_arguments(p.add_argument_group(f"engines of --target {b.name}"))
    add_ray_arguments(p)
    add_common_args(p)
    return p


def _run(a: argparse.Namespace) -> int:
    backend = targets.get_backend(a.target)
    mode = a.mode or backend.default_mode
    backend.check_mode(mode)
    if a.samples is not None and a.samples < 1:
        raise UserError("--samples must be >= 1")
    if a.engine != "sim":
        backend.check_engine(a.engine, mode, a)
        if a.ray is not None:
            raise UserError(f"--engine {a.engine} runs in this process only; drop --ray")
    device = ray_device(a)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    build = convert(a.checkpoint, conversion_options(a, a.target))
    for line in build.source.describe():
        print(f"spk-parity: {line}")
    cfg = build.source.config
    dataset, opener = open_split(a.data, cfg, model_data_config(build.source.metadata), "test", a.seed, a.skip_bad)
    n = len(dataset) if not a.samples else min(a.samples, len(dataset))
    samples = stream(dataset, opener, range(n), a.workers, shared=ray_reads_data(a))
    print(f"spk-parity: data {a.data}: {n} of {len(dataset)} test samples ({dataset.info.get('split_rule')})")
    graph, numeric = build.runnable(mode)
    sim_runner = None
    if a.engine != "sim":
        sim_runner = make_sim_runner(backend.open_engine(a.engine, build.target, a))
    facts = {"model": build.source.name, "checkpoint_sha256": build.source.sha256,
             "preset": a.preset or ("matched: " + build.source.metadata["preset"]
                                    if build.source.metadata.get("preset_matched") else "from checkpoint"),
             "config": cfg.to_dict(), "architecture_origin": build.source.metadata.get("architecture_origin"),
             "data_config": build.source.metadata.get("data_config"), "target": a.target, "mode": mode,
             "engine": a.engine, "ssa_form": build.ssa_form,
             "data": a.data, "seed": a.seed, "device": device,
             "reference_dtype": "float64" if mode == "float" else "float32",
             "determinism": set_reference_determinism(device)}
    if mode == "fixed":
        facts["quantization"] = build.quantization_facts()
    facts["ssa_order"] = sorted({v["order"] for v in build.lowered.metadata.get("ssa", {}).values()})
    atol = a.logit_atol if a.logit_atol is not None else default_logit_atol(mode)
    executor = ray_executor(a, "spk-parity")
    with executor or contextlib.nullcontext():
        res = run_parity(build.source.model, graph, samples, None, mode, a.batch_size, device, sim_device=device,
                         progress=not a.no_progress,
                         sim_runner=sim_runner, numeric=numeric, logit_atol=atol, executor=executor)
    facts["scale_out"] = executor.describe() if executor is not None else None
    facts["data_info"] = data_facts(a.data, dataset.info, samples, res.samples)
    summary = summarize(res, facts)
    if sim_runner is not None and sim_runner.crosscheck is not None:
        summary["engine_crosscheck"] = dict(sim_runner.crosscheck.to_dict(), incidents=sim_runner.engine.incidents)
    with atomic_dir(a.out) as stage:
        (stage / "parity.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
        (stage / "parity.md").write_text(parity_markdown(summary))
        firing_rate_plot(summary, stage / "firing_rates.png")
    o = summary["overall"]
    print(f"spk-parity: {o['samples']} samples, {mode} {a.engine}: accuracy reference {o['accuracy_reference']:.4f}, "
          f"simulator {o['accuracy_simulator']:.4f}, prediction agreement {o['prediction_agreement']:.4f}, "
          f"spike mismatches {o['total_spike_mismatches']:,}, worst layer agreement {o['min_layer_agreement']:.6f}"
          f" -> {a.out}")
    failed = []
    xc = summary.get("engine_crosscheck")
    if xc is not None:
        for t in xc["incidents"]:
            print(f"spk-parity: {t['what']}", file=sys.stderr)
        print(f"spk-parity: {xc['engine']} vs {xc['simulator']} simulator on the same {xc['samples']} samples: "
              f"{xc['spike_mismatches']:,} of {xc['spikes_compared']:,} spikes differ in {xc['populations']} "
              f"populations, readout v {xc['readout_step_mismatches']:,} differ, predictions "
              f"{xc['prediction_differences']} differ")
        if xc["differences"]:
            failed.append(f"{xc['engine']} differs from the {xc['simulator']} simulator ({xc['differences']:,} differences; "
                          f"parity.json engine_crosscheck)")
    if o["prediction_agreement"] < a.min_agreement:
        failed.append(f"prediction agreement {o['prediction_agreement']:.4f} < --min-agreement {a.min_agreement}")
    if o["min_layer_agreement"] < a.min_layer_agreement:
        failed.append(f"layer agreement {o['min_layer_agreement']:.6f} < --min-layer-agreement "
                      f"{a.min_layer_agreement}")
    if failed:
        print("spk-parity: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("spk-parity", build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
