"""The conversion options every command takes, built once from convert.options.ConversionOptions: the same
flags with the same defaults in spk-convert, spk-parity and spk-report, so they name the same network. The flags
only one target reads are that target's (Backend.add_arguments, Backend.option_fields)."""
from __future__ import annotations

import argparse

from convert.options import SSA_CHOICES, SSA_ORDERS, WEIGHTS_CHOICES, ConversionOptions, OptionsError
from ground.errors import UserError
from hw_backends import base as targets
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
    for backend in targets.backends():
        backend.add_arguments(g)


def source_arguments(args: argparse.Namespace) -> dict:
    """The load-time flags of add_source_arguments as load_checkpoint's keyword arguments."""
    return {"heads": args.heads, "time_steps": args.time_steps, "img_size": args.img_size,
            "normalize": args.normalize}


def target_arguments(args: argparse.Namespace) -> dict:
    """The flags every registered target adds (Backend.option_fields), as ConversionOptions fields: all of them
    whichever target runs, so every artifact records the same options."""
    return {f: getattr(args, f) for backend in targets.backends() for f in backend.option_fields}


def conversion_options(args: argparse.Namespace, target: str, device: str = "cpu") -> ConversionOptions:
    try:
        return ConversionOptions(target=target, ssa=args.ssa, ssa_order=args.ssa_order, preset=args.preset,
                                 weights=args.weights, device=device, **source_arguments(args),
                                 **target_arguments(args))
    except OptionsError as e:
        raise UserError(str(e)) from None
