"""spk-train's architecture and input flags: a preset as the base, fields replaced by --layout, --depth, --dim, ...
(spikformer.architecture.override_preset), and the data config it is trained with (--normalize, else by the data
spec's kind: the official yml of the layout for the official image data sets, none for everything else)."""
from __future__ import annotations

import argparse

from ground.errors import UserError
from spikformer.architecture import ArchitectureError, override_preset
from spikformer.data_config import OFFICIAL, RAW, DataConfig, parse_normalize
from spikformer.presets import LAYOUTS, UnknownPresetError
from spikformer.sdt_architecture import override_sdt_preset
from spikformer.sdt_presets import ALL_SDT_PRESETS

# flag -> (config field, type); the defaults are the --preset's values
OVERRIDES = {"--layout": ("layout", str), "--depth": ("depth", int), "--dim": ("embed_dim", int),
             "--heads": ("num_heads", int), "--mlp-ratio": ("mlp_ratio", float), "--time-steps": ("T", int),
             "--img-size": ("img_size", int), "--num-classes": ("num_classes", int),
             "--in-channels": ("in_channels", int), "--pool-stages": ("pool_stages", int)}
OFFICIAL_SPEC_KINDS = ("cifar10", "cifar100", "imagenet")  # data specs "KIND:..." preprocessed as officially


def add_architecture_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("architecture (default: the --preset's value) and input")
    for flag, (field, kind) in OVERRIDES.items():
        extra = {"choices": LAYOUTS} if flag == "--layout" else {}
        g.add_argument(flag, dest=f"arch_{field}", type=kind, default=None, metavar=field.upper(),
                       help=f"the model's {field} (default: the preset's)", **extra)
    g.add_argument("--normalize", default=None,
                   help="input normalisation the model is trained with (part of the model, written into the "
                        "checkpoint): none, cifar, imagenet or M1,M2,M3/S1,S2,S3 (default: the official yml of the "
                        f"layout for {', '.join(k + ':' for k in OFFICIAL_SPEC_KINDS)} data, else none)")


def training_architecture(args: argparse.Namespace):
    """The Architecture (or, for a Spike-driven Transformer preset, the SDTArchitecture) spk-train builds."""
    overrides = {field: (getattr(args, f"arch_{field}"), flag) for flag, (field, _) in OVERRIDES.items()}
    for flag, (field, kind) in OVERRIDES.items():
        value = overrides[field][0]
        if kind is not str and value is not None and not value > 0 and not (field == "pool_stages" and value == 0):
            raise UserError(f"{flag} must be positive, got {value}")
    try:
        if args.preset in ALL_SDT_PRESETS:  # a Spike-driven Transformer
            return override_sdt_preset(args.preset, overrides)
        return override_preset(args.preset, overrides)
    except (UnknownPresetError, ArchitectureError) as e:
        raise UserError(str(e)) from None


def training_data_config(args: argparse.Namespace, config) -> DataConfig:
    if args.normalize is not None:
        dc = parse_normalize(args.normalize, config.in_channels)
    elif str(args.data).split(":", 1)[0].lower() in OFFICIAL_SPEC_KINDS:
        dc = OFFICIAL[config.layout].with_origin(f"{OFFICIAL[config.layout].origin}, for {args.data}")
    else:
        dc = RAW
    if dc.normalized and config.event_input:
        raise UserError(f"{dc.origin}: the {config.layout} layout takes event counts, which are not normalised (as "
                        f"the official DVS code)")
    dc.check_channels(config.in_channels)
    return dc
