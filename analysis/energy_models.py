"""Named energy models: per-operation energies with their sources, as data.

Every model has the same fields (picojoules):
    mac_pj                      one multiply-accumulate (a synaptic op whose input is not a spike)
    ac_pj                       one accumulate (a synaptic op driven by a spike)
    neuron_update_inactive_pj   one neuron update in a step without input
    neuron_update_active_pj     one neuron update in a step with input (or a spike)
    spike_pj                    one spike emitted (routing)
A user model is a JSON file with these keys plus `name`, and optionally `description`, `source` and `notes`;
it is validated field by field (`load_energy_model`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ground.errors import UserError

ENERGY_FIELDS = ("mac_pj", "ac_pj", "neuron_update_inactive_pj", "neuron_update_active_pj", "spike_pj")
TEXT_FIELDS = ("name", "description", "source", "notes")


class EnergyModelError(UserError):
    """An energy model that cannot be used; the message is one line."""


@dataclass(frozen=True)
class EnergyModel:
    name: str
    mac_pj: float
    ac_pj: float
    neuron_update_inactive_pj: float = 0.0
    neuron_update_active_pj: float = 0.0
    spike_pj: float = 0.0
    description: str = ""
    source: str = ""
    notes: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


CMOS45 = EnergyModel(
    name="cmos45",
    mac_pj=4.6,
    ac_pj=0.9,
    description="45 nm CMOS, 32-bit floating point: E_MAC = fp32 mult 3.7 pJ + fp32 add 0.9 pJ = 4.6 pJ; "
                "E_AC = fp32 add 0.9 pJ. The constants of the Spikformer line of papers.",
    source="M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
           "doi:10.1109/ISSCC.2014.6757323 (45 nm figures)",
    notes=("Arithmetic only: neuron updates, spikes, memory access and data movement cost 0 pJ in this model "
           "(critics of the SNN-vs-ANN comparisons point out that memory traffic is ignored).",),
)

LOIHI = EnergyModel(
    name="loihi",
    mac_pj=23.6,
    ac_pj=23.6,
    neuron_update_inactive_pj=52.0,
    neuron_update_active_pj=81.0,
    spike_pj=1.7,
    description="Intel Loihi (1) per-operation energies: 23.6 pJ per synaptic op, 52 pJ / 81 pJ per inactive / "
                "active neuron update, 1.7 pJ per spike within a tile.",
    source="M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', IEEE Micro 38(1), "
           "2018, doi:10.1109/MM.2018.112130359 (pre-silicon figures, Table 1)",
    notes=("These are Loihi 1 figures: no per-operation energies of Loihi 2 are published, so this model uses "
           "Loihi 1's.",
           "23.6 pJ is the minimum energy per synaptic op; every effective synaptic op is charged that, whether "
           "driven by a binary spike (AC) or by a graded value (MAC; the analog image into the first conv is "
           "assumed to arrive as graded spikes, a Loihi 2 feature).",
           "1.7 pJ is the cost of a spike within a tile; routing between tiles or chips costs more and is not "
           "modelled. Static (leakage) power and host I/O are not modelled.",
           "An update is 'active' when the neuron receives non-zero input (including a bias current) or spikes "
           "in that step; this reading of 'active' is ours."),
)

BUILTIN_MODELS = {m.name: m for m in (CMOS45, LOIHI)}


def _check_number(path: str, key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise EnergyModelError(f"energy model {path}: {key} must be a number (picojoules), got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise EnergyModelError(f"energy model {path}: {key} must be a finite number >= 0, got {v!r}")
    return v


def model_from_dict(d, where: str = "<dict>") -> EnergyModel:
    if not isinstance(d, dict):
        raise EnergyModelError(f"energy model {where} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(ENERGY_FIELDS) - set(TEXT_FIELDS))
    if unknown:
        raise EnergyModelError(f"energy model {where}: unknown keys {unknown}; allowed: "
                               f"{list(TEXT_FIELDS) + list(ENERGY_FIELDS)}")
    missing = [k for k in ("name", "mac_pj", "ac_pj") if k not in d]
    if missing:
        raise EnergyModelError(f"energy model {where}: missing keys {missing} (required: name, mac_pj, ac_pj; "
                               f"optional: {', '.join(ENERGY_FIELDS[2:])}, description, source, notes)")
    vals = {k: _check_number(where, k, d[k]) for k in ENERGY_FIELDS if k in d}
    for k in ("name", "description", "source"):
        if k in d and not isinstance(d[k], str):
            raise EnergyModelError(f"energy model {where}: {k} must be a string, got {d[k]!r}")
    if not d["name"].strip():
        raise EnergyModelError(f"energy model {where}: name is empty")
    notes = d.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise EnergyModelError(f"energy model {where}: notes must be a string or a list of strings")
    return EnergyModel(name=d["name"].strip(), description=d.get("description", ""),
                       source=d.get("source", "") or f"user file {Path(where).name}", notes=tuple(notes), **vals)


def load_energy_model(spec: str) -> EnergyModel:
    """A built-in name (cmos45, loihi) or the path of a JSON file."""
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]
    path = Path(spec)
    if not path.exists():
        raise EnergyModelError(f"unknown energy model {spec!r}: not one of {sorted(BUILTIN_MODELS)} and no such "
                               f"file")
    if path.is_dir():
        raise EnergyModelError(f"energy model {spec} is a directory; give a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EnergyModelError(f"cannot read energy model {spec}: {e}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise EnergyModelError(f"energy model {spec} is not valid JSON: {e.msg} at line {e.lineno} column "
                               f"{e.colno}") from None
    return model_from_dict(d, spec)
