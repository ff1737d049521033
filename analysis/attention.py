"""Spiking self-attention maps, as the Spikformer paper shows them: per head, the Q K^T of one block at one time
step, from the simulated hardware network beside the PyTorch reference, drawn over the input. For a Spike-driven
Transformer, the SDSA's output q * kv instead (its attention has no token-by-token matrix): per head, how many of
the head's channels each token keeps, the simulated AND neurons beside the reference's q and talking-heads spikes
multiplied.

Q and K are the spikes of `block.{i}.attn.q_lif` / `k_lif` (channels D = heads x head_dim, tokens N). Per head
h, A_h = Q_h^T K_h is an N x N matrix of integer counts (query n, key m); what the figure shows per head is the
attention each token receives, sum over queries of A_h[:, m] (times SSA's scale 0.125 this is the input the
attention LIF of that head sees, summed over the value channels' weights), on the token grid over the image.
The maps of the reference and the simulation are integers and compared exactly."""
from __future__ import annotations

import copy
import math

import torch

from sim.engine import Engine
from spikformer.sdt_presets import SDTConfig

from .reference import record_reference


def _received(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """q, k [B, D, N] spikes -> [B, heads, N]: per head, the sum over queries of Q^T K (integer counts)."""
    B, D, N = q.shape
    qh = q.reshape(B, heads, D // heads, N).double()
    kh = k.reshape(B, heads, D // heads, N).double()
    return torch.einsum("bhdn,bhdm->bhm", qh, kh)


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """x [B, D, N] spikes (the Spike-driven Transformer's q * kv) -> [B, heads, N]: per head, the active channels
    of each token."""
    B, D, N = x.shape
    return x.reshape(B, heads, D // heads, N).double().sum(2)


def attention_position(cfg, block: int | None = None, step: int | None = None) -> tuple[int, int]:
    """(block, time step) of the maps, checked against the model (defaults: the last of each); ValueError
    naming the flag otherwise."""
    block = cfg.depth - 1 if block is None else int(block)
    step = cfg.T - 1 if step is None else int(step)
    if not 0 <= block < cfg.depth:
        raise ValueError(f"--attention-block {block}: the model has blocks 0..{cfg.depth - 1}")
    if not 0 <= step < cfg.T:
        raise ValueError(f"--attention-step {step}: the model has time steps 0..{cfg.T - 1}")
    return block, step


def attention_maps(build, mode: str, images: torch.Tensor, block: int | None = None,
                   step: int | None = None) -> dict:
    """Per-head attention maps of `images` (a few samples) in the simulated network (`build.runnable(mode)`)
    and in the PyTorch reference, at `block` (default: the last) and time step `step` (default: the last)."""
    cfg = build.source.config
    block, step = attention_position(cfg, block, step)
    attn = f"block.{block}.attn"
    sdt = isinstance(cfg, SDTConfig)
    q_name, k_name = f"{attn}.q_lif", f"{attn}.k_lif"
    graph, numeric = build.runnable(mode)
    record = [f"{attn}.q_and_talking_heads"] if sdt else [q_name, k_name]
    sim = Engine(graph, numeric).run(images, record=record)
    model = copy.deepcopy(build.source.model).to("cpu", torch.float64 if mode == "float" else torch.float32)
    _, ref = record_reference(model.eval(), images.to(next(model.parameters()).dtype))
    heads = cfg.num_heads
    if sdt:  # the simulated AND neurons beside the reference's own product of its q and talking-heads spikes
        got = _per_head(sim.records[record[0]][step].cpu(), heads)
        want = _per_head(ref[q_name][step].cpu() * ref[f"{attn}.talking_heads_lif"][step].cpu(), heads)
    else:
        got = _received(sim.records[q_name][step].cpu(), sim.records[k_name][step].cpu(), heads)
        want = _received(ref[q_name][step].cpu(), ref[k_name][step].cpu(), heads)
    n = got.shape[-1]
    side = math.isqrt(n)
    grid = (side, n // side) if side * side == n else (1, n)
    return {"block": block, "step": step, "heads": heads, "tokens": n, "grid": list(grid), "mode": mode,
            "samples": int(images.shape[0]), "simulation": got, "reference": want,
            "equal_entries": int((got == want).sum()), "entries": int(got.numel()),
            "max_abs_diff": float((got - want).abs().max()) if got.numel() else 0.0,
            **({"what": "SDSA output q * kv: active channels per token"} if sdt else {})}


def summary(maps: dict) -> dict:
    """The JSON-able part: which block, step and samples, and how far the simulation is from the reference."""
    keys = ("block", "step", "heads", "tokens", "grid", "mode", "samples", "equal_entries", "entries",
            "max_abs_diff")
    out = {k: maps[k] for k in keys}
    if "what" in maps:
        out["what"] = maps["what"]
    out["per_sample_head"] = {
        "simulation_total": maps["simulation"].sum(-1).tolist(),
        "reference_total": maps["reference"].sum(-1).tolist()}
    return out
