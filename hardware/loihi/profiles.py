"""Per-core and per-chip figures of the Loihi generations the placement (`placement.py`) obeys, each with its
source and status: "sourced" (stated by the source), "derived" (computed from sourced figures, the rule given) or
"assumption" (no public figure: the reason and the effect of changing it are stated). docs/limits.md, section 2,
gives the sources in full; `--hw loihi1|loihi2` picks one."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from convert.options import DEFAULT_HW

SOURCED, DERIVED, ASSUMPTION = "sourced", "derived", "assumption"

# sources (docs/limits.md lists them with their addresses)
NL_BLOCK = "[NL] nengo-loihi 1.1.0 nengo_loihi/block.py"
NL_CFG = f"{NL_BLOCK}, SynapseConfig.bits_per_axon / Synapse.bits"
NL_AXON = f"{NL_BLOCK}, Axon.axon_slots (pop32: 2 slots per axon)"
NL_CONNECTION = ("[NL] nengo_loihi/config.py: Connection pop_type default 32; builder/connection.py: convolutions "
                 "as population axons")
NL_AXONS_PER_SYNAPSE = ("[NL] nengo_loihi/block.py: Axon.target is one Synapse (each Synapse is reached by its own "
                        "axons); hardware/nxsdk_objects.py writes one synapseMap entry per axon of each Synapse")
NL_ALLOC = "[NL] nengo_loihi/hardware/allocators.py: Greedy(cores_per_chip=128)"
BRIEF = "[B] Intel Loihi 2 brief (2021)"
LAVA = "[L] lava-nc 0.10.0 PyDelaySparseModelBitAcc (6-bit delays)"


@dataclass(frozen=True)
class Figure:
    status: str   # SOURCED, DERIVED or ASSUMPTION
    source: str   # where the number comes from (or the rule that derives it)
    note: str = ""  # for assumptions: why this value, and what changes if the real one differs

    def to_dict(self) -> dict:
        return {"status": self.status, "source": self.source, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    cores_per_chip: int
    neurons_per_core: int               # compartments
    synapse_memory_bits_per_core: int
    input_axons_per_core: int
    output_axons_per_core: int
    weight_bits: int                    # stored weight bits per synapse (sign included: mixed-sign format)
    max_delay_bits: int                 # synaptic delay field; a synapse stores delay.bit_length() bits
    index_bits_min: int                 # synapse index (target compartment) field of the sparse format
    index_bits_max: int
    synapses_per_block: int             # synapses are stored in blocks of at most this many ...
    block_header_bits: int              # ... each with this header ...
    memory_word_bits: int               # ... rounded up to whole words
    population_axon_slots: int          # output-axon slots a population axon (pop32) takes on its sending core
    population_axons: bool              # convolution-shaped projections may use population axons
    synapse_groups_share_axons: bool    # projections alike in source, delay, format and geometry (the high and
    #                                     low parts of a 16-bit weight) drive one list of synapses per input axon
    sources: dict = field(default_factory=dict, compare=False)  # field name -> Figure

    def limits(self) -> dict:
        """The four per-core limits the placement checks, by name."""
        return {"compartments": self.neurons_per_core, "synapse_bits": self.synapse_memory_bits_per_core,
                "input_axons": self.input_axons_per_core, "output_axons": self.output_axons_per_core}

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}
        out["sources"] = {k: v.to_dict() for k, v in self.sources.items()}
        return out


_SYNAPSE_FORMAT = {  # nengo-loihi's synapse memory rule, read off SynapseConfig.bits_per_axon
    "weight_bits": Figure(SOURCED, f"{NL_CFG}: WEIGHT_BITS_MAP[7] = 8 (weight_bits=7 in _set_weights_indices)"),
    "index_bits_min": Figure(SOURCED, f"{NL_CFG}: INDEX_BITS_MAP = [0, 6, ..., 12], compression 0 adds them"),
    "synapses_per_block": Figure(SOURCED, f"{NL_CFG}: n_synapses = 63, blocks of n_synapses + 1"),
    "block_header_bits": Figure(SOURCED, f"{NL_CFG}: synapse_idx_bits 4 + n_synapses_bits 6 per block"),
    "memory_word_bits": Figure(SOURCED, f"{NL_CFG}: each block rounded up to 64 bits"),
    "population_axon_slots": Figure(SOURCED, f"{NL_AXON}; {NL_CONNECTION}"),
    "population_axons": Figure(SOURCED, NL_CONNECTION),
}

LOIHI1 = HardwareProfile(
    name="loihi1", description="Intel Loihi (2018), per-core figures as nengo-loihi 1.1.0 checks them",
    cores_per_chip=128, neurons_per_core=1024, synapse_memory_bits_per_core=1_048_576, input_axons_per_core=4096,
    output_axons_per_core=4096, weight_bits=8, max_delay_bits=6, index_bits_min=6, index_bits_max=12,
    synapses_per_block=64, block_header_bits=10, memory_word_bits=64, population_axon_slots=2,
    population_axons=True, synapse_groups_share_axons=False,
    sources={
        "cores_per_chip": Figure(SOURCED, NL_ALLOC),
        "synapse_groups_share_axons": Figure(SOURCED, NL_AXONS_PER_SYNAPSE),
        "neurons_per_core": Figure(SOURCED, f"{NL_BLOCK}: MAX_COMPARTMENTS"),
        "synapse_memory_bits_per_core": Figure(SOURCED, f"{NL_BLOCK}: MAX_SYNAPSE_BITS"),
        "input_axons_per_core": Figure(SOURCED, f"{NL_BLOCK}: MAX_IN_AXONS"),
        "output_axons_per_core": Figure(SOURCED, f"{NL_BLOCK}: MAX_OUT_AXONS"),
        "max_delay_bits": Figure(ASSUMPTION, "the export's 6-bit delays (lava, Loihi 2)",
                                 "nengo-loihi never sets delay_bits (validate_synapse_cfg allows 0..7); a delay "
                                 "costs delay.bit_length() bits per synapse, as on Loihi 2"),
        "index_bits_max": Figure(SOURCED, f"{NL_CFG}: INDEX_BITS_MAP[-1] = 12"),
        **_SYNAPSE_FORMAT,
    })

# Loihi 2: the chip figures are Intel's; per-core figures are not published (docs/limits.md, section 2).
_L2_SYNAPSES_PER_CHIP = 120_000_000
LOIHI2 = HardwareProfile(
    name="loihi2", description="Intel Loihi 2 (2021): chip figures from Intel's brief, per-core figures derived or "
                               "assumed (docs/limits.md, section 2)",
    cores_per_chip=128, neurons_per_core=8192, synapse_memory_bits_per_core=_L2_SYNAPSES_PER_CHIP // 128,
    input_axons_per_core=4096, output_axons_per_core=4096, weight_bits=8, max_delay_bits=6, index_bits_min=6,
    index_bits_max=13, synapses_per_block=64, block_header_bits=10, memory_word_bits=64, population_axon_slots=2,
    population_axons=True, synapse_groups_share_axons=True,
    sources={
        "cores_per_chip": Figure(SOURCED, f"{BRIEF}: 128 neuro cores per chip; [O] Orchard et al. 2021"),
        "neurons_per_core": Figure(DERIVED, f"{BRIEF}: up to 1M neurons per chip; 2^20 / 128 cores",
                                   "an upper bound: core memory is shared with each neuron model's state, so a "
                                   "stateful LIF may fit fewer per core; fewer would multiply the cores of every "
                                   "compartment-bound population"),
        "synapse_memory_bits_per_core": Figure(
            ASSUMPTION, f"{BRIEF}: up to 120M synapses per chip; 120,000,000 bits / 128 cores",
            "the headline read as 1-bit synapses, as Loihi 1's is (about 130M synapses per chip as Intel announced "
            "it = 128 cores x 1,048,576 bits, nengo-loihi's MAX_SYNAPSE_BITS); read as 8-bit synapses it would be "
            "7,500,000 bits per core (8x), and synapse-bound populations would need up to 8x fewer cores"),
        "input_axons_per_core": Figure(ASSUMPTION, f"Loihi 1's figure ({NL_BLOCK}: MAX_IN_AXONS)",
                                       "no Loihi 2 figure is published; every input-axon-bound population scales "
                                       "its cores inversely with it"),
        "output_axons_per_core": Figure(ASSUMPTION, f"Loihi 1's figure ({NL_BLOCK}: MAX_OUT_AXONS)",
                                        "no Loihi 2 figure is published; binds only for populations whose neurons "
                                        "feed many cores"),
        "max_delay_bits": Figure(SOURCED, LAVA),
        "synapse_groups_share_axons": Figure(
            ASSUMPTION, "an input axon names one list of synapse entries (synapseMap: pointer and length) and every "
                        "entry names its own synapse format (nengo-loihi's nxsdk_objects.py writes synFmtId per "
                        "entry), so the high and low parts of a 16-bit weight, two formats with different weight "
                        "exponents, can sit in one list behind one axon",
            "nengo-loihi gives each part its own axons (the loihi1 profile does the same); without sharing a "
            "16-bit projection needs twice the input and output axons, and the official cifar10-4-384 and "
            "imagenet weights then need --weight-bits 8 (docs/limits.md, section 5)"),
        "index_bits_max": Figure(ASSUMPTION, "the smallest index that addresses 8192 compartments",
                                 "Loihi 1's map stops at 12 bits (4096 compartments); a 12-bit field would cap a "
                                 "core's sparse synapse targets at 4096 compartments"),
        **{k: Figure(ASSUMPTION, f"Loihi 1's rule ({v.source})",
                     "Loihi 2's synapse encoding is not published; assumed to keep Loihi 1's formats, population "
                     "axons with shared weights included. Without population axons a 3x3 conv needs "
                     "9 C_in input axons per neuron (imagenet-8-768's rpe_conv: 6,912 > 4,096) and a readout "
                     "neuron one axon per input neuron: those populations could not be placed")
           for k, v in _SYNAPSE_FORMAT.items()},
    })

PROFILES = {p.name: p for p in (LOIHI1, LOIHI2)}
DEFAULT_PROFILE = DEFAULT_HW


class UnknownProfileError(ValueError):
    pass


def get_profile(name: str | HardwareProfile | None = None) -> HardwareProfile:
    if isinstance(name, HardwareProfile):
        return name
    name = DEFAULT_PROFILE if name is None else name
    if name not in PROFILES:
        raise UnknownProfileError(f"unknown hardware profile {name!r}; choose one of {', '.join(sorted(PROFILES))}")
    return PROFILES[name]
