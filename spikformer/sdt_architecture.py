"""The architecture of a Spike-driven Transformer state dict: an SDTConfig inferred from the parameter names and
shapes, the training checkpoint's `args` (the official train.py's, BICLab/Spike-Driven-Transformer) and the user's
flags, every field with where it came from (docs/sdt_lowering.md, "Checkpoints").

Order, field by field (first found wins, contradictions are errors), as for Spikformer (spikformer.architecture):
- the shapes fix in_channels, embed_dim, num_classes, depth, mlp_ratio, num_heads (the never-called
  `talking_heads` Conv1d is [heads, heads, 1]) and spike_mode (a ParametricLIF has a parameter `w`); args that
  disagree with them are an error;
- T and img_size: a flag (--time-steps, --img-size) or the args (time_steps, img_size); pooling_stat, TET: the
  args; dvs_mode: the args (train.py sets it for the cifar10-dvs data sets), event_input: the args' data set;
- then the presets whose parameter shapes are those of the state dict (their values must agree; TET trains
  differently but infers the same, so presets differing only in it count as one);
- then train.py's argparse defaults (pooling_stat "1111", T 4, no TET); event input where the model reads 2
  channels (the DVS polarities). img_size has no default there (train.py passes None): it must come from one of
  the above.
"""
from __future__ import annotations

from dataclasses import fields

from .architecture import (BUILD_ERRORS, FLAGS, SHAPE_ORIGIN, Architecture, ArchitectureError, _as_int, _shape,
                           inferred)
from .sdt_presets import ALL_SDT_PRESETS, SDTConfig

TALKING_HEADS = "block.0.attn.talking_heads.weight"
# official train.py's argparse names of each field (its dest names, as the saved Namespace holds them)
ARG_NAMES = {"T": "time_steps", "img_size": "img_size", "depth": "layer", "embed_dim": "dim",
             "mlp_ratio": "mlp_ratio", "num_classes": "num_classes", "num_heads": "num_heads",
             "in_channels": "in_channels", "pooling_stat": "pooling_stat", "spike_mode": "spike_mode",
             "tet": "TET", "dvs_mode": "dvs_mode"}
TRAIN_DEFAULTS = {"T": 4, "pooling_stat": "1111", "tet": False}  # train.py's argparse defaults
DVS_DATASETS = ("cifar10-dvs", "cifar10-dvs-tet", "gesture")     # train.py: event frames, not images
DVS_MODE_DATASETS = ("cifar10-dvs", "cifar10-dvs-tet")           # train.py: args.dvs_mode = True
TRAINING_ONLY = ("tet",)  # fields that change the training loss, not what inference computes
FIELDS = tuple(f.name for f in fields(SDTConfig))


def is_sdt_state(state: dict) -> bool:
    """A Spike-driven Transformer's state dict: its attention blocks hold `talking_heads` (Spikformer's do not)."""
    return any(k.endswith(".attn.talking_heads.weight") for k in state)


def override_sdt_preset(base: str, overrides: dict) -> Architecture:
    """A Spike-driven Transformer preset with some fields replaced (spk-train's --depth, --dim, ...): `overrides`
    maps a field to (value, the flag that gave it); None values are not given; the Spikformer-only fields
    (layout, pool_stages) are refused."""
    config = ALL_SDT_PRESETS[base]
    given = {k: v for k, v in overrides.items() if v[0] is not None}
    alien = [v[1] for k, v in given.items() if k not in FIELDS]
    if alien:
        raise ArchitectureError(f"{', '.join(alien)} does not apply to the Spike-driven Transformer preset {base} "
                                f"(its fields: {', '.join(FIELDS)})")
    origin = {k: f"preset {base}" for k in FIELDS}
    origin.update({k: v[1] for k, v in given.items()})
    try:
        config = config.with_(**{k: (int(v[0]) if k == "mlp_ratio" and float(v[0]).is_integer() else v[0])
                                 for k, v in given.items()})
    except BUILD_ERRORS as e:
        raise ArchitectureError(f"preset {base} with {', '.join(f'{v[1]} {v[0]}' for v in given.values())}: {e}") \
            from None
    return Architecture(config, origin, sdt_preset_named(config), base)


def sdt_preset_named(config: SDTConfig) -> str | None:
    return next((name for name, cfg in ALL_SDT_PRESETS.items() if cfg == config), None)


def shape_facts(state: dict, source: str) -> dict:
    conv0, conv3 = _shape(state, "patch_embed.proj_conv.weight"), _shape(state, "patch_embed.proj_conv3.weight")
    head = _shape(state, "head.weight")
    if conv0 is None or len(conv0) != 4 or conv3 is None or len(conv3) != 4 or head is None or len(head) != 2:
        raise ArchitectureError(f"{source} is not a Spike-driven Transformer state dict (no patch_embed.proj_conv / "
                                f"proj_conv3 [D, D/2, 3, 3] or head.weight [classes, D])")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("block.") and k.split(".")[1].isdigit()}
    facts = {"in_channels": conv0[1], "embed_dim": conv3[0], "num_classes": head[0], "depth": len(blocks),
             "spike_mode": "plif" if "patch_embed.proj_lif.w" in state else "lif"}
    if blocks:
        fc1, th = _shape(state, "block.0.mlp.fc1_conv.weight"), _shape(state, TALKING_HEADS)
        if fc1 is None or th is None:
            raise ArchitectureError(f"{source} has blocks but no block.0.mlp.fc1_conv or attn.talking_heads weight; "
                                    f"not an official Spike-driven Transformer")
        if fc1[0] % conv3[0]:
            raise ArchitectureError(f"{source}: fc1_conv has {fc1[0]} channels, not a whole multiple of the "
                                    f"embedding {conv3[0]} (the official mlp_ratio is an int)")
        facts["mlp_ratio"], facts["num_heads"] = fc1[0] // conv3[0], th[0]
    return facts


def args_facts(args) -> dict:
    """field -> (value, argument name) for every official training argument present and not None; the data set
    gives event_input and, where the args predate dvs_mode, dvs_mode."""
    if not isinstance(args, dict):
        return {}
    found = {name: (_as_int(args[key]), key) for name, key in ARG_NAMES.items() if args.get(key) is not None}
    if "tet" in found:
        found["tet"] = (bool(found["tet"][0]), "TET")
    dataset = args.get("dataset")
    if isinstance(dataset, str):
        found["event_input"] = (dataset in DVS_DATASETS, f"dataset {dataset}")
        found.setdefault("dvs_mode", (dataset in DVS_MODE_DATASETS, f"dataset {dataset}"))
    return found


def presets_with_shapes(facts: dict) -> dict[str, SDTConfig]:
    shaped = ("in_channels", "embed_dim", "num_classes", "depth", "mlp_ratio", "num_heads")
    return {name: cfg for name, cfg in ALL_SDT_PRESETS.items()
            if all(getattr(cfg, k) == facts[k] for k in shaped if k in facts)}


def infer_sdt_architecture(state: dict, args: dict | None = None, flags: dict | None = None,
                           source: str = "the state dict") -> Architecture:
    """The Architecture of a state dict (see the module docstring). `flags`: {"num_heads", "T", "img_size"} ->
    value or None (not given)."""
    facts = shape_facts(state, source)
    given = args_facts(args)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values = dict(facts)
    origin = {k: SHAPE_ORIGIN for k in facts}
    for name, (value, key) in given.items():
        if name in values and value != values[name]:
            raise ArchitectureError(f"{source}: checkpoint args say {key} {value} but the state dict's shapes "
                                    f"give {name} {values[name]}")
    for name, value in flags.items():
        if name in values and value != values[name]:
            raise ArchitectureError(f"{source}: {FLAGS[name]} {value} contradicts the state dict's shapes "
                                    f"({name} {values[name]})")
    candidates = presets_with_shapes(facts)

    def resolve(name: str, default=None):
        flag, arg = flags.get(name), given.get(name)
        if flag is not None and arg is not None and flag != arg[0]:
            raise ArchitectureError(f"{source}: {FLAGS[name]} {flag} contradicts the checkpoint's args "
                                    f"({arg[1]} {arg[0]}), which say what was trained; drop {FLAGS[name]}")
        if flag is not None:
            return flag, FLAGS[name]
        if arg is not None:
            return arg[0], f"checkpoint args ({arg[1]})"
        seen = {getattr(cfg, name) for cfg in candidates.values()}
        if len(seen) == 1:
            return seen.pop(), f"preset {', '.join(candidates)} (same parameter shapes)"
        if len(seen) > 1 and name not in TRAINING_ONLY:
            hint = f" or give {FLAGS[name]}" if name in FLAGS else ""
            raise ArchitectureError(f"{source} matches several presets ({', '.join(candidates)}: same parameter "
                                    f"shapes) that differ in {name}; choose one with --preset{hint}")
        if default is not None:
            return default
        raise ArchitectureError(f"{source}: its {name} is not in the checkpoint and no preset has its shapes; "
                                f"give {FLAGS.get(name, '--preset')}")

    for name in ("T", "pooling_stat", "tet"):
        values[name], origin[name] = resolve(name, (TRAIN_DEFAULTS[name], "official train.py default"))
    values["img_size"], origin["img_size"] = resolve("img_size")
    values["event_input"], origin["event_input"] = resolve(
        "event_input", (facts["in_channels"] == 2, "2 input channels: event polarity frames" if facts["in_channels"]
                        == 2 else "image input"))
    values["dvs_mode"], origin["dvs_mode"] = resolve("dvs_mode", (False, "official train.py (not a cifar10-dvs set)"))
    if "num_heads" not in values:  # no blocks: the heads build nothing
        values["num_heads"], origin["num_heads"] = resolve("num_heads", (8, "official train.py default"))
        values["mlp_ratio"], origin["mlp_ratio"] = 4, "no blocks (unused)"
    return inferred(SDTConfig, values, origin, source, ("img_size", "T", "pooling_stat"), "--img-size / --time-steps",
                    sdt_preset_named)
