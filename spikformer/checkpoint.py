"""One-file checkpoints and safe loading of our own and official Spikformer weights.

Format (a torch zip file, written atomically, no timestamps, the same bytes for the same weights and metadata):
    {"format": "spikformer-checkpoint", "format_version": 1,
     "config": SpikformerConfig.to_dict(), "state_dict": {name: tensor (CPU)}, "metadata": {...}}

Loading always uses torch.load(weights_only=True): a file that would need full unpickling (and so could run code)
is refused. The one exception is the argparse.Namespace that timm's training scripts (the official Spikformer
ones) store as "args": such a file is read with spikformer.restricted_unpickler, which rebuilds exactly what
weights_only does plus that Namespace, whose values are reduced to plain data.

Accepted: our own format; a bare state dict (official checkpoints); a state dict wrapped as {"model": ...} /
{"state_dict": ...} / {"model_state_dict": ...}; timm's training checkpoints ({"state_dict", "state_dict_ema",
"optimizer", "epoch", "arch", "args", "metric", ...}: `weights="model"` takes "state_dict" as the official
test script does (timm's resume_checkpoint), `weights="ema"` the EMA weights); "module." (DataParallel/DDP) and
"_orig_mod." (torch.compile) prefixes are stripped. Without a preset, the architecture of a state dict is
inferred from its parameter names and shapes, the training checkpoint's args and the user's flags
(spikformer.architecture); mismatching parameters are listed by name. The data config (input normalisation) is
resolved as spikformer.data_config describes and set on the model.
"""
from __future__ import annotations

import io
import pickle
import platform
import zipfile
from pathlib import Path

import torch

from ground.atomic import write_bytes
from ground.errors import UserError, check_positive_ints
from . import restricted_unpickler
from .architecture import BUILD_ERRORS, FLAGS, ArchitectureError, apply_flags, describe, infer_architecture
from .data_config import RAW, DataConfig, DataConfigError, resolve_data_config
from .model import Spikformer
from .presets import OWN_PRESETS, PRESETS, SpikformerConfig, UnknownPresetError, get_preset
from .sdt_architecture import infer_sdt_architecture, is_sdt_state
from .sdt_presets import ALL_SDT_PRESETS, SDT_OWN_PRESETS, SDTConfig
from .zoo import build_model, named_preset

FORMAT = "spikformer-checkpoint"
FORMAT_VERSION = 1
MAX_LISTED = 12  # names listed per kind of mismatch before "... and N more"
# Checked before anything is unpickled (an untrusted file must not make the loader allocate or loop without
# bound): the file, the archive's total uncompressed size, its number of members (torch writes one per tensor
# storage plus a few), and its pickle (the structure only; tensors are separate members). For scale, by
# arithmetic: a Spikformer-8-768 training checkpoint with EMA weights and Adam's two moments holds 4 copies of
# 66.4 M float32 parameters, 1.06 GB, in about 4 x 250 tensors.
MAX_CHECKPOINT_BYTES = 16 * 2 ** 30
MAX_ARCHIVE_MEMBERS = 200_000
MAX_PICKLE_BYTES = 256 * 2 ** 20
WEIGHTS = ("model", "ema")  # which weights of a training checkpoint: "state_dict" or "state_dict_ema"
TRAINING_FACTS = ("epoch", "arch", "metric", "version")  # kept (plain) from a training checkpoint
# The file's "architecture" entry, written for a Spike-driven Transformer only (a Spikformer file has none, so its
# bytes are those of every earlier version)
SDT_ARCHITECTURE = "spike-driven-transformer"


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded; the message is one line."""


def library_versions() -> dict:
    import numpy
    import spikingjelly

    try:
        from importlib.metadata import version
        sj = version("spikingjelly")
    except Exception:  # noqa: BLE001
        sj = getattr(spikingjelly, "__version__", "unknown")
    return {"torch": str(torch.__version__), "spikingjelly": str(sj), "numpy": str(numpy.__version__),
            "python": platform.python_version()}


def plain(obj):
    """Metadata reduced to what torch.load(weights_only=True) accepts and every reader understands: str, int,
    float, bool, None, lists and str-keyed dicts of them, and tensors. Anything else becomes its str()."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return plain(item())
    return str(obj)


def preset_config(name: str):
    """A preset of either architecture by name; CheckpointError (one line, every name) when unknown."""
    if name in ALL_SDT_PRESETS:
        return ALL_SDT_PRESETS[name]
    try:
        return get_preset(name)
    except UnknownPresetError as e:
        raise CheckpointError(f"{e}; Spike-driven Transformer presets: {', '.join(ALL_SDT_PRESETS)}") from None


def checkpoint_bytes(model: torch.nn.Module, config: SpikformerConfig | SDTConfig,
                     metadata: dict | None = None) -> bytes:
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(), "state_dict": state,
           "metadata": plain(dict(metadata or {}))}
    if isinstance(config, SDTConfig):
        obj["architecture"] = SDT_ARCHITECTURE
    buf = io.BytesIO()  # saving to a buffer keeps the archive name fixed, independent of the output path
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(path, model: torch.nn.Module, metadata: dict | None = None,
                    config: SpikformerConfig | SDTConfig | None = None) -> Path:
    """Write model (+ its config and `metadata`) to `path` atomically. Metadata values must be plain
    (str/int/float/bool/None, lists and dicts of them) so the file loads with weights_only=True."""
    config = config or getattr(model, "config", None)
    if not isinstance(config, (SpikformerConfig, SDTConfig)):
        raise ValueError("save_checkpoint needs the model's SpikformerConfig or SDTConfig")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a directory; give a file name such as {path / 'model.pt'}")
    write_bytes(path, checkpoint_bytes(model, config, metadata))
    return path


# ------------------------------------------------------------------------------------------------------ loading

def _short(msg: str) -> str:
    """The informative tail of torch's multi-line weights_only message, on one line."""
    msg = " ".join(str(msg).split())
    for marker in ("WeightsUnpickler error:", "Unsupported"):
        i = msg.find(marker)
        if i >= 0:
            return msg[i:][:200]
    return msg[:200]


def _read_zip(path: Path, read):
    """`read(zipfile)` of the archive at `path`; CheckpointError (one line) where it is damaged."""
    try:
        with zipfile.ZipFile(path) as z:
            return read(z)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, NotImplementedError, RuntimeError,
            MemoryError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint (damaged zip archive: "
                              f"{type(e).__name__}: {_short(e)})") from None


def _check_sizes(path: Path, is_zip: bool) -> None:
    """Refuses (one line) a checkpoint beyond the MAX_* limits above, before anything is unpickled."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"refused to load {path}: {size:,} bytes exceeds the limit of {MAX_CHECKPOINT_BYTES:,} "
                              f"(spikformer/checkpoint.py MAX_CHECKPOINT_BYTES)")
    if not is_zip:
        return
    members = _read_zip(path, zipfile.ZipFile.infolist)
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise CheckpointError(f"refused to load {path}: {len(members):,} archive members exceed the limit of "
                              f"{MAX_ARCHIVE_MEMBERS:,} (spikformer/checkpoint.py MAX_ARCHIVE_MEMBERS)")
    total = sum(m.file_size for m in members)
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"refused to load {path}: its members hold {total:,} bytes uncompressed, beyond the "
                              f"limit of {MAX_CHECKPOINT_BYTES:,} (spikformer/checkpoint.py MAX_CHECKPOINT_BYTES)")
    pickles = [m for m in members if m.filename.endswith(".pkl")]
    big = [m for m in pickles if m.file_size > MAX_PICKLE_BYTES]
    if big:
        raise CheckpointError(f"refused to load {path}: its pickle {big[0].filename} holds {big[0].file_size:,} "
                              f"bytes, beyond the limit of {MAX_PICKLE_BYTES:,} (spikformer/checkpoint.py "
                              f"MAX_PICKLE_BYTES)")


def _check_zip_crc(path: Path) -> None:
    """torch.load does not verify the archive's CRC-32s, so a damaged tensor would load as different weights;
    zipfile's testzip does (one extra read of the file)."""
    bad = _read_zip(path, zipfile.ZipFile.testzip)
    if bad is not None:
        raise CheckpointError(f"{path} is damaged: archive member {bad} fails its CRC-32 check")


def _torch_load(path: Path, map_location):
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    is_zip = head.startswith(b"PK\x03\x04") or (len(head) > 0 and zipfile.is_zipfile(path))
    is_legacy = head[:1] == b"\x80"  # pickle protocol 2+ (torch's pre-1.6 format starts with a pickled magic number)
    if not (is_zip or is_legacy):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it is {'empty' if not head else 'another kind of file'})")
    _check_sizes(path, is_zip)
    if is_zip:
        _check_zip_crc(path)
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported class argparse.Namespace" not in str(e):
                raise
            # a training checkpoint's "args": the same restrictions plus argparse.Namespace (see the docstring)
            return torch.load(path, map_location=map_location, weights_only=False,
                              pickle_module=restricted_unpickler)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported" in text or "WeightsUnpickler" in text:
            raise CheckpointError(
                f"refused to load {path}: it needs full unpickling, which could execute code "
                f"({_short(text)}); only tensors and plain containers are accepted") from None
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint ({_short(text)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile, AttributeError,
            TypeError, IndexError, AssertionError) as e:  # AssertionError: torch's persistent_load on damaged ids
        raise CheckpointError(f"{path} is not a valid PyTorch checkpoint ({type(e).__name__}: "
                              f"{_short(e) or 'truncated or corrupt'})") from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _list(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def state_differences(expected: dict, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) entries of `state` against the `expected` state dict; the mis-shaped ones
    with both shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} (expected {list(expected[k].shape)}, got {list(state[k].shape)})"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, misshaped


def check_state_dict(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped parameter/buffer."""
    missing, unexpected, misshaped = state_differences(model.state_dict(), state)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_list(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: {_list(misshaped)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model ({'; '.join(problems)})")


def _strip_prefix(state: dict) -> dict:
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP, torch.compile
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _training_facts(obj: dict) -> dict:
    """What a training checkpoint says about its run, as plain data (its "args" Namespace as a dict)."""
    facts = {k: plain(obj[k]) for k in TRAINING_FACTS if k in obj}
    args = obj.get("args")
    if args is not None:
        facts["args"] = plain(vars(args) if hasattr(args, "__dict__") else args)
    return facts


def _select_state(obj, weights: str, path: Path) -> tuple[dict, str, dict]:
    """(state dict, what it was, training facts) of a file that is not in our format."""
    if weights == "ema" and not (isinstance(obj, dict) and _is_state_dict(obj.get("state_dict_ema"))):
        raise CheckpointError(f"{path} holds no EMA weights ('state_dict_ema'); use --weights model")
    if _is_state_dict(obj):
        return obj, "bare state dict", {}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is neither a spikformer checkpoint nor a state dict of tensors")
    facts = _training_facts(obj)
    if weights == "ema":
        return obj["state_dict_ema"], "EMA weights (state_dict_ema) of a training checkpoint", facts
    for key in ("state_dict", "model", "model_state_dict"):
        if _is_state_dict(obj.get(key)):
            kind = "training checkpoint ('state_dict')" if "optimizer" in obj or "args" in obj or "epoch" in obj \
                else f"state dict under {key!r}"
            return obj[key], kind, facts
    raise CheckpointError(f"{path} is neither a spikformer checkpoint nor a state dict of tensors")


def _mismatch(config: SpikformerConfig, state: dict) -> tuple[int, int, int] | None:
    """(missing, unexpected, mis-shaped) parameter counts of `state` against the preset's model, or None when
    the config cannot build a model."""
    try:
        with torch.device("meta"):
            expected = Spikformer(config).state_dict()
    except BUILD_ERRORS:
        return None
    return tuple(len(d) for d in state_differences(expected, state))


def match_preset(state: dict, source: str = "the state dict") -> str:
    """The one preset whose parameter names and shapes are those of `state`; CheckpointError (one line, every
    candidate with what differs) when none or several match."""
    diffs = {name: _mismatch(cfg, state) for name, cfg in PRESETS.items()}
    exact = [n for n, d in diffs.items() if d == (0, 0, 0)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CheckpointError(f"{source} matches several presets ({', '.join(exact)}: same parameter names and "
                              f"shapes); choose one with --preset")
    def what(d):
        return "cannot be built" if d is None else ", ".join(
            f"{n} {k}" for n, k in zip(d, ("missing", "unexpected", "mis-shaped")) if n) or "matches"
    near = sorted(diffs, key=lambda n: (diffs[n] is None, sum(diffs[n] or (0,))))
    raise CheckpointError(f"{source} matches no preset ({'; '.join(f'{n}: {what(diffs[n])}' for n in near)}); "
                          f"its architecture is not one this tool builds, or pass --preset to see every difference")


def _data_config(layout: str, metadata: dict, ours: bool, preset: str | None, normalize: str | None,
                 in_channels: int, path: Path) -> DataConfig:
    """resolve_data_config, except that a state dict of one of our own presets is raw input, as we train them."""
    try:
        if normalize is None and not ours and (preset in OWN_PRESETS or preset in SDT_OWN_PRESETS):
            return RAW.with_origin(f"none: raw values in [0, 1], as preset {preset} is trained")
        return resolve_data_config(layout, metadata, ours, normalize, in_channels)
    except DataConfigError as e:
        raise CheckpointError(f"{path}: {e}; give --normalize none or MEAN1,.../STD1,...") from None


def load_checkpoint(path, preset: str | None = None, device: str | torch.device = "cpu", weights: str = "model",
                    heads: int | None = None, time_steps: int | None = None, img_size: int | None = None,
                    normalize: str | None = None) -> tuple[Spikformer, SpikformerConfig, dict]:
    """-> (model in eval mode, config, metadata). Our format carries its config; the architecture of any other
    state dict is `preset`, or the one inferred from its parameter names and shapes, its training args and the
    flags `heads`, `time_steps`, `img_size` (None: not given; spikformer.architecture). `normalize`: a --normalize
    value overriding the data config (None: not given). `weights`: "model" or "ema" for a training checkpoint
    (see the module docstring). metadata gains "architecture_origin" ({field: origin}), "data_config"
    (DataConfig.to_dict(), origin included) and "preset" (the preset the config equals, else None)."""
    path = Path(path)
    if weights not in WEIGHTS:
        raise CheckpointError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    flags = {"num_heads": heads, "T": time_steps, "img_size": img_size}
    check_positive_ints({FLAGS[name]: value for name, value in flags.items()}, CheckpointError)
    obj = _torch_load(path, map_location=device)
    preset_cfg = preset_config(preset) if preset is not None else None

    ours = isinstance(obj, dict) and obj.get("format") == FORMAT
    try:
        if ours:
            version = obj.get("format_version")
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{path} has checkpoint format version {version!r}; this tool reads version "
                                      f"{FORMAT_VERSION}")
            kind = obj.get("architecture")
            if kind not in (None, SDT_ARCHITECTURE):
                raise CheckpointError(f"{path} holds a {kind!r} model; this tool reads Spikformer and "
                                      f"{SDT_ARCHITECTURE!r} checkpoints")
            try:
                config = (SDTConfig if kind == SDT_ARCHITECTURE else SpikformerConfig).from_dict(dict(obj["config"]))
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path} has an invalid model config: {e}") from None
            if preset_cfg is not None and preset_cfg != config:
                diff = sorted(k for k, v in config.to_dict().items() if preset_cfg.to_dict().get(k) != v)
                raise CheckpointError(f"{path} was saved for a different architecture than preset {preset!r} "
                                      f"(differs in {', '.join(diff)}); drop --preset to use the saved config")
            state = obj.get("state_dict")
            metadata = obj.get("metadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            if not _is_state_dict(state):
                raise CheckpointError(f"{path} has no valid state_dict entry")
            saved = metadata.get("architecture_origin")
            origin = {k: str(saved.get(k, "checkpoint config")) if isinstance(saved, dict) else "checkpoint config"
                      for k in config.to_dict()}
            config, origin = apply_flags(config, origin, flags, str(path), saved=True)
            metadata = dict(metadata, source="spikformer-checkpoint")
            if "preset" not in metadata:
                metadata["preset"] = named_preset(config)
        else:
            state, kind, facts = _select_state(obj, weights, path)
            state = _strip_prefix(state)
            metadata = {"source": kind}
            if facts:
                metadata["training"] = facts
            if preset_cfg is not None:
                config, origin = apply_flags(preset_cfg, {k: f"--preset {preset}" for k in preset_cfg.to_dict()},
                                             flags, str(path), saved=False)
                metadata["preset"] = preset if config == preset_cfg else None
            else:
                infer = infer_sdt_architecture if is_sdt_state(state) else infer_architecture
                arch = infer(state, facts.get("args"), flags, str(path))
                config, origin = arch.config, arch.origin
                metadata["preset"] = arch.preset
                if arch.preset is not None:
                    metadata["preset_matched"] = True  # not given: the inferred architecture is this preset's
    except ArchitectureError as e:
        raise CheckpointError(str(e)) from None
    metadata["architecture_origin"] = origin

    try:  # expected shapes without allocating anything: a damaged config cannot make us build a huge model
        with torch.device("meta"):
            skeleton = build_model(config)
    except BUILD_ERRORS as e:
        raise CheckpointError(f"{path}: its model config cannot build a {type(config).__name__.removesuffix('Config')} "
                              f"({_short(e)})") from None
    check_state_dict(skeleton, state, source=str(path))
    data_config = _data_config(config.layout, metadata, ours, metadata.get("preset"), normalize,
                               config.in_channels, path)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # dtype problems and the like
        raise CheckpointError(f"{path}: cannot load weights ({_short(e)})") from None
    try:
        model.set_input_normalization(data_config)
    except ValueError as e:  # event input takes no normalisation
        raise CheckpointError(f"{path}: {e}; drop --normalize") from None
    metadata["data_config"] = data_config.to_dict()
    model.to(device).eval()
    return model, config, metadata


def describe_loaded(config: SpikformerConfig, metadata: dict) -> list[str]:
    """The two lines every command prints about a loaded model: its architecture and its data config, each value
    with its origin."""
    arch = describe(config, metadata.get("architecture_origin"), metadata.get("preset"))
    try:
        data = DataConfig.from_dict(metadata.get("data_config")).describe()
    except DataConfigError:
        data = "unknown"
    return [f"architecture: {arch}", f"input: {data}"]
