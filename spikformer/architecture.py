"""The architecture of a Spikformer state dict: a SpikformerConfig inferred from the parameter names and shapes,
the training checkpoint's `args` and the user's flags, every field with where it came from (docs/spikformer.md,
"Architecture from a checkpoint").

Order, field by field (first found wins, contradictions are errors):
- the state dict's shapes fix layout, depth, embed_dim, mlp_ratio, num_classes, in_channels (and, for the dvs
  layout, the token grid of `pos_embed`, so img_size = grid * 2**pool_stages); args or flags that disagree with
  them are an error;
- num_heads, T, img_size: a flag (--heads, --time-steps, --img-size) or the training args (official names:
  num_heads, time_step or T, img_size); a flag that contradicts the args is an error (the args say what was
  trained);
- then the preset(s) whose parameter names and shapes are those of the state dict (their values must agree);
- then the official default of the layout (OFFICIAL_DEFAULTS).
pool_stages and product_order are fixed by the official code of each layout (a preset may say otherwise for
our own models, e.g. event-digits-2-64 pools twice).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ground.errors import UserError
from .presets import PRESETS, SpikformerConfig
from .sdt_presets import ALL_SDT_PRESETS, SDTConfig

SHAPE_ORIGIN = "state dict shapes"
# Official values of what the shapes do not tell (docs/spikformer.md, "Architecture from a checkpoint").
OFFICIAL_DEFAULTS = {
    "cifar": {"num_heads": 12, "T": 4, "img_size": 32, "pool_stages": 2, "product_order": "qk_first"},
    "imagenet": {"num_heads": 8, "T": 4, "img_size": 224, "pool_stages": 4, "product_order": "kv_first"},
    "dvs": {"num_heads": 16, "T": 16, "img_size": 128, "pool_stages": 4, "product_order": "qk_first"},
}
FLAGS = {"num_heads": "--heads", "T": "--time-steps", "img_size": "--img-size"}  # load-time flags, by field
# Official training-argument names of each field (cifar10/train.py, imagenet/train.py, cifar10dvs/train.py).
ARG_NAMES = {"num_heads": ("num_heads",), "T": ("time_step", "T"), "img_size": ("img_size",), "depth": ("layer",),
             "embed_dim": ("dim",), "mlp_ratio": ("mlp_ratio",), "num_classes": ("num_classes",)}
# cifar10dvs/train.py has --num-classes (default 10) but never passes it to create_model: not a model fact there
ARGS_NOT_BUILT = {"dvs": ("num_classes",)}
FIELDS = tuple(f.name for f in fields(SpikformerConfig))
DESCRIBE_ORDER = ("layout", "depth", "embed_dim", "num_heads", "mlp_ratio", "num_classes", "in_channels", "img_size",
                  "T", "pool_stages", "product_order")
BUILD_ERRORS = (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError)  # a config that builds no model


class ArchitectureError(UserError):
    """A state dict whose architecture cannot be inferred, or flags/args that contradict it; one line."""


@dataclass(frozen=True)
class Architecture:
    config: SpikformerConfig | SDTConfig  # a Spikformer's, or a Spike-driven Transformer's (sdt_architecture.py)
    origin: dict            # field -> where its value came from
    preset: str | None = None  # the preset equal to `config`, if any
    base: str | None = None    # override_preset: the preset it started from

    @property
    def overridden(self) -> bool:
        """Built from a preset (override_preset) and no longer equal to it."""
        presets = ALL_SDT_PRESETS if isinstance(self.config, SDTConfig) else PRESETS
        return self.base is not None and self.config != presets[self.base]

    def describe(self) -> str:
        return describe(self.config, self.origin, self.preset)


def describe(config, origin: dict | None, preset: str | None = None) -> str:
    """One line: every config value grouped by its origin, e.g. "cifar10-4-384: layout cifar, depth 4, ...
    (state dict shapes); num_heads 12, T 4, img_size 32 (checkpoint args)"."""
    origin = origin if isinstance(origin, dict) else {}
    groups: dict[str, list[str]] = {}
    values = config.to_dict()
    for name in DESCRIBE_ORDER if isinstance(config, SpikformerConfig) else values:  # an SDTConfig: its own order
        value = values[name]
        groups.setdefault(str(origin.get(name, "unknown origin")), []).append(f"{name} {value:g}" if isinstance(
            value, float) else f"{name} {value}")
    head = f"preset {preset}" if preset else "no preset"
    return f"{head}: " + "; ".join(f"{', '.join(v)} ({k})" for k, v in groups.items())


def preset_named(config: SpikformerConfig) -> str | None:
    return next((name for name, cfg in PRESETS.items() if cfg == config), None)


# ------------------------------------------------------------------------------------------------- shapes
def _shape(state: dict, key: str) -> tuple | None:
    v = state.get(key)
    return tuple(v.shape) if v is not None and hasattr(v, "shape") else None


def detect_layout(state: dict, source: str) -> str:
    """cifar: Linear q/k/v (`q_linear`); imagenet: Conv1d q/k/v and a Conv2d MLP (4-d fc1_conv weight); dvs: Conv1d
    q/k/v, a Conv1d MLP (3-d) and `pos_embed`."""
    conv, head = _shape(state, "patch_embed.proj_conv.weight"), _shape(state, "head.weight")
    missing = ([] if conv is not None and len(conv) == 4 else ["patch_embed.proj_conv.weight [D/8, C, 3, 3]"]) + \
        ([] if head is not None and len(head) == 2 else ["head.weight [classes, D]"])
    if missing:
        raise ArchitectureError(f"{source} is not a Spikformer state dict (no {' or '.join(missing)} of the "
                                f"official layouts); its architecture cannot be inferred")
    if "block.0.attn.q_linear.weight" in state:
        return "cifar"
    fc1 = _shape(state, "block.0.mlp.fc1_conv.weight")
    if "block.0.attn.q_conv.weight" in state and fc1 is not None:
        return "imagenet" if len(fc1) == 4 else "dvs"
    if "pos_embed" in state:
        return "dvs"
    raise ArchitectureError(f"{source} has no block.0.attn.q_linear or q_conv/fc1_conv weights, so its layout "
                            f"(cifar, imagenet or dvs) cannot be told; give --preset")


def _mlp_ratio(dim: int, hidden: int) -> float:
    """A ratio r with int(dim * r) == hidden (how the official Block sizes its MLP)."""
    r = hidden / dim
    return r if int(dim * r) == hidden else math.nextafter(r, math.inf)


def shape_facts(state: dict, source: str) -> dict:
    """What the parameter names and shapes fix: layout, depth, embed_dim, mlp_ratio, num_classes, in_channels,
    and for the dvs layout the token grid (key "grid")."""
    layout = detect_layout(state, source)
    classes, dim = _shape(state, "head.weight")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("block.") and k.split(".")[1].isdigit()}
    facts = {"layout": layout, "depth": max(blocks) + 1 if blocks else 0, "embed_dim": dim, "num_classes": classes,
             "in_channels": _shape(state, "patch_embed.proj_conv.weight")[1]}
    if blocks:
        fc1 = _shape(state, f"block.0.mlp.fc1_{'linear' if layout == 'cifar' else 'conv'}.weight")
        if fc1 is None:
            raise ArchitectureError(f"{source} has blocks but no block.0.mlp fc1 weight; not an official Spikformer")
        facts["mlp_ratio"] = _mlp_ratio(dim, fc1[0])
    if layout == "dvs":
        pos = _shape(state, "pos_embed")
        grid = math.isqrt(pos[1]) if pos is not None and len(pos) == 3 else 0
        if pos is None or len(pos) != 3 or grid * grid != pos[1] or grid < 1:
            raise ArchitectureError(f"{source}: the dvs layout needs pos_embed [1, N, D] with N a square token "
                                    f"grid, got {list(pos) if pos is not None else 'none'}")
        facts["grid"] = grid
    return facts


# --------------------------------------------------------------------------------------------------- args
def _as_int(value):
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value) \
        else value


def args_facts(args) -> dict:
    """field -> (value, official argument name) for every official training argument present and not None."""
    if not isinstance(args, dict):
        return {}
    found = {}
    for name, keys in ARG_NAMES.items():
        for key in keys:
            if args.get(key) is not None:
                found[name] = (args[key] if name == "mlp_ratio" else _as_int(args[key]), key)
                break
    return found


def _agrees(name: str, value, shaped, dim: int) -> bool:
    if name == "mlp_ratio":
        return isinstance(value, (int, float)) and int(dim * value) == int(dim * shaped)
    return value == shaped


# ------------------------------------------------------------------------------------------------ presets
def presets_with_shapes(facts: dict) -> dict[str, SpikformerConfig]:
    """The presets whose parameter names and shapes are those the shape facts describe."""
    def same(cfg: SpikformerConfig) -> bool:
        if cfg.layout != facts["layout"]:
            return False
        if any(getattr(cfg, k) != facts[k] for k in ("depth", "embed_dim", "num_classes", "in_channels")):
            return False
        if "mlp_ratio" in facts and cfg.hidden_dim != int(facts["embed_dim"] * facts["mlp_ratio"]):
            return False
        return "grid" not in facts or cfg.grid == facts["grid"]
    return {name: cfg for name, cfg in PRESETS.items() if same(cfg)}


# ---------------------------------------------------------------------------------------------- inference
def infer_architecture(state: dict, args: dict | None = None, flags: dict | None = None,
                       source: str = "the state dict") -> Architecture:
    """The Architecture of a state dict (see the module docstring). `args`: a training checkpoint's args as a
    dict; `flags`: {"num_heads", "T", "img_size"} -> value or None (not given)."""
    facts = shape_facts(state, source)
    layout, dim = facts["layout"], facts["embed_dim"]
    given = {k: v for k, v in args_facts(args).items() if k not in ARGS_NOT_BUILT.get(layout, ())}
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values, origin = {}, {}
    for name in ("layout", "depth", "embed_dim", "mlp_ratio", "num_classes", "in_channels"):
        if name in facts:
            values[name], origin[name] = facts[name], SHAPE_ORIGIN
    for name, (value, key) in given.items():  # args that the shapes fix must agree with them
        if name in values and not _agrees(name, value, values[name], dim):
            raise ArchitectureError(f"{source}: checkpoint args say {key} {value} but the state dict's shapes "
                                    f"give {name} {values[name]:g}")

    candidates = presets_with_shapes(facts)

    def resolve(name: str):
        flag, arg = flags.get(name), given.get(name)
        if flag is not None and arg is not None and flag != arg[0]:
            raise ArchitectureError(f"{source}: {FLAGS[name]} {flag} contradicts the checkpoint's args "
                                    f"({arg[1]} {arg[0]}), which say what was trained; drop {FLAGS[name]}")
        if flag is not None:
            return flag, FLAGS[name] + (f" (= checkpoint args {arg[1]})" if arg is not None else "")
        if arg is not None:
            return arg[0], f"checkpoint args ({arg[1]})"
        seen = {cfg.to_dict()[name] for cfg in candidates.values()}
        if len(seen) == 1:
            names = ", ".join(candidates)
            return seen.pop(), f"preset {names} (same parameter names and shapes)"
        if len(seen) > 1:
            hint = f" or give {FLAGS[name]}" if name in FLAGS else ""
            raise ArchitectureError(f"{source} matches several presets ({', '.join(candidates)}: same parameter "
                                    f"names and shapes) that differ in {name}; choose one with --preset{hint}")
        return OFFICIAL_DEFAULTS[layout][name], f"official default of the {layout} layout"

    for name in ("num_heads", "T", "pool_stages", "product_order"):
        values[name], origin[name] = resolve(name)
    if "mlp_ratio" not in values:  # no blocks: the ratio builds nothing
        values["mlp_ratio"], origin["mlp_ratio"] = 4.0, "no blocks (unused)"
    if layout == "dvs":
        img = facts["grid"] * 2 ** values["pool_stages"]
        arg = given.get("img_size")
        for value, what in ((flags.get("img_size"), FLAGS["img_size"]),
                            (arg and arg[0], f"checkpoint args {arg and arg[1]}")):
            if value is not None and value != img:
                raise ArchitectureError(f"{source}: {what} {value} contradicts pos_embed, whose {facts['grid']}x"
                                        f"{facts['grid']} token grid with {values['pool_stages']} max-pools "
                                        f"({origin['pool_stages']}) means img_size {img}")
        values["img_size"] = img
        origin["img_size"] = (f"{SHAPE_ORIGIN} (pos_embed: {facts['grid']}x{facts['grid']} tokens x "
                              f"2**{values['pool_stages']})")
    else:
        values["img_size"], origin["img_size"] = resolve("img_size")
    return inferred(SpikformerConfig, values, origin, source, ("num_heads", "img_size", "T"),
                    "--heads / --img-size / --time-steps", preset_named)


def inferred(cls, values: dict, origin: dict, source: str, culprits: tuple, flags: str, named) -> Architecture:
    """The Architecture of inferred `values` (a config of class `cls`, the preset `named` gives); ArchitectureError
    naming the `culprits` fields and their origins where they build no valid config."""
    try:
        config = cls(**values)
    except BUILD_ERRORS as e:
        why = "; ".join(f"{k} {values[k]} from {origin[k]}" for k in culprits)
        raise ArchitectureError(f"{source}: the inferred architecture is not valid ({e}; {why}); give "
                                f"{flags} or --preset") from None
    return Architecture(config, {f.name: origin[f.name] for f in fields(cls)}, named(config))


def override_preset(base: str, overrides: dict) -> Architecture:
    """A preset with some fields replaced (spk-train's --depth, --dim, ...): `overrides` maps a field to
    (value, the flag that gave it); None values are not given. A new layout brings its official product order."""
    from .presets import get_preset

    config = get_preset(base)
    given = {k: v for k, v in overrides.items() if v[0] is not None}
    values = {k: v[0] for k, v in given.items()}
    origin = {k: f"preset {base}" for k in FIELDS}
    origin.update({k: v[1] for k, v in given.items()})
    layout = values.get("layout", config.layout)
    if layout != config.layout and "product_order" not in values and layout in OFFICIAL_DEFAULTS:
        values["product_order"] = OFFICIAL_DEFAULTS[layout]["product_order"]
        origin["product_order"] = f"official default of the {layout} layout"
    try:
        config = config.with_(**values)
    except BUILD_ERRORS as e:
        flags = ", ".join(f"{v[1]} {v[0]}" for v in given.values())
        raise ArchitectureError(f"preset {base} with {flags}: {e}") from None
    return Architecture(config, origin, preset_named(config), base)


def apply_flags(config: SpikformerConfig, origin: dict, flags: dict | None, source: str,
                saved: bool) -> tuple[SpikformerConfig, dict]:
    """Flags on a known config: on a saved config (our checkpoint format) they must agree with it; on a preset
    they override it."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    origin = dict(origin)
    for name, value in flags.items():
        current = getattr(config, name)
        if saved and value != current:
            raise ArchitectureError(f"{source} stores {name} {current} in its config but {FLAGS[name]} {value} was "
                                    f"given; drop {FLAGS[name]}")
        if value != current or not saved:
            origin[name] = FLAGS[name]
    if not saved and flags:
        try:
            config = config.with_(**flags)
        except BUILD_ERRORS as e:
            raise ArchitectureError(f"{source}: {e}") from None
    return config, origin
