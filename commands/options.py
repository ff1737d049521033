"""The conversion options every command takes, built once from convert.options.ConversionOptions: the same
flags with the same defaults in spk-convert, spk-parity and spk-report, so they name the same network."""
from __future__ import annotations

import argparse

from convert.options import (DEFAULT_INPUT_SCALE, SSA_CHOICES, SSA_ORDERS, WEIGHT_BITS_CHOICES, WEIGHTS_CHOICES,
                             ConversionOptions, OptionsError)
from ground.errors import UserError
from hardware.loihi.profiles import PROFILES
from spikformer.presets import PRESETS

DEFAULTS = ConversionOptions()


def add_source_arguments(g) -> None:
    """Which model a checkpoint holds: also spk-eval's."""
    g.add_argument("--preset", default=DEFAULTS.preset,
                   help=f"architecture of a state dict: {', '.join(sorted(PRESETS))} (default: inferred from its "
                        "parameter names and shapes and a training checkpoint's args; checkpoints from spk-train "
                        "carry their own)")
    g.add_argument("--heads", type=int, default=DEFAULTS.heads,
                   help="attention heads of a state dict (default: its training args, else the preset with its "
                        "shapes, else the layout's official value); must agree with the args and a saved config")
    g.add_argument("--time-steps", type=int, default=DEFAULTS.time_steps,
                   help="time steps T of a state dict (default: as for --heads)")
    g.add_argument("--img-size", type=int, default=DEFAULTS.img_size,
                   help="input image size of a state dict (default: as for --heads; dvs layout: from pos_embed)")
    g.add_argument("--normalize", default=DEFAULTS.normalize,
                   help="input normalisation: none, cifar, imagenet (that official yml) or M1,M2,M3/S1,S2,S3 "
                        "(default: the checkpoint's data config, a training checkpoint's args, else the official "
                        "yml of the layout; our own digits models: none)")
    g.add_argument("--weights", default=DEFAULTS.weights, choices=WEIGHTS_CHOICES,
                   help="a training checkpoint's weights: 'model' (its state_dict, as the official test script "
                        f"loads them) or 'ema' (state_dict_ema) (default {DEFAULTS.weights})")


def add_conversion_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("conversion (the same in spk-convert, spk-parity and spk-report)")
    add_source_arguments(g)
    g.add_argument("--ssa", "--ssa-form", dest="ssa", default=DEFAULTS.ssa, choices=SSA_CHOICES,
                   help="SSA lowering: binary spikes and threshold neurons (any chip, NIR), or Loihi 2 graded spikes, "
                        "product neurons and graded residual relays; auto: the target's cheaper form (NIR: binary; "
                        f"Loihi: the one that needs fewer cores) (default {DEFAULTS.ssa})")
    g.add_argument("--ssa-order", default=DEFAULTS.ssa_order, choices=SSA_ORDERS,
                   help=f"SSA product order; auto picks the one with fewer neurons (default {DEFAULTS.ssa_order})")
    g.add_argument("--weight-bits", type=int, default=DEFAULTS.weight_bits, choices=WEIGHT_BITS_CHOICES,
                   help="loihi: 16 carries each dense weight in two 8-bit synapse groups (high and low part, more "
                        f"synapses, near-float accuracy); 8 uses one group (default {DEFAULTS.weight_bits})")
    g.add_argument("--vth-mant", type=int, default=DEFAULTS.vth_mant,
                   help="loihi: threshold mantissa of LIF layers; sets the fixed-point scale lambda = (64 vth + 1) / "
                        f"theta (default {DEFAULTS.vth_mant})")
    g.add_argument("--input-scale", type=int, default=DEFAULTS.input_scale,
                   help="loihi: graded input payload = round(x * SCALE) for x in [0, 1] (default: the training data's "
                        f"exact grid recorded in the checkpoint, e.g. 256 for the digits at 16x16, else "
                        f"{DEFAULT_INPUT_SCALE})")
    g.add_argument("--hw", default=DEFAULTS.hw, choices=sorted(PROFILES),
                   help="loihi: the hardware profile the network is placed on, every per-core limit obeyed "
                        "(compartments, synapse memory, input and output axons; docs/limits.md): loihi1 "
                        "(nengo-loihi's figures) or loihi2 (Intel's chip figures, unpublished per-core figures "
                        f"assumed) (default {DEFAULTS.hw})")


def source_arguments(args: argparse.Namespace) -> dict:
    """The load-time flags of add_source_arguments as load_checkpoint's keyword arguments."""
    return {"heads": args.heads, "time_steps": args.time_steps, "img_size": args.img_size,
            "normalize": args.normalize}


def default_mode(target: str) -> str:
    """What a target's build runs by default: Loihi fixed point for loihi (the network spk-convert exports),
    reference float semantics otherwise."""
    return "fixed" if target == "loihi" else "float"


def conversion_options(args: argparse.Namespace, target: str, device: str = "cpu") -> ConversionOptions:
    try:
        return ConversionOptions(target=target, ssa=args.ssa, ssa_order=args.ssa_order, weight_bits=args.weight_bits,
                                 vth_mant=args.vth_mant, input_scale=args.input_scale, preset=args.preset,
                                 weights=args.weights, device=device, hw=args.hw, **source_arguments(args))
    except OptionsError as e:
        raise UserError(str(e)) from None
