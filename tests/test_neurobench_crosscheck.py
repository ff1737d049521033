"""Our synaptic-operation counts against NeuroBench 2.3.0 (`neurobench.metrics.workload.SynapticOperations`),
layer by layer, on the PyTorch digits model and real digits images.

How NeuroBench counts (neurobench/metrics/utils/layers/{input,macs,binary_copy}.py): a forward-pre-hook on every
Linear/Conv layer keeps each call's input; per call, the input counts as spiking if all its values are in
{-1, 0, 1} (then its ops are ACs, else MACs); the ops are the (non-zero input, non-zero weight) pairs, found by
running a copy of the layer with 0/1 weights and zero bias on the 0/1 input and summing the output; 'Dense' is
the same with all-ones input and weights. Results are per sample (divided by the batch size).

Our rule is the same for every layer whose input is one spike stream or the analog image: equal numbers. Two
differences are by design, and the test checks each exactly:
- Residual sums (inputs of q/k/v of block 1, fc1 of every block; of block 0's q/k/v where maxpool3 + rpe_lif
  reach 2): the graph reads each spike stream separately, so a value k costs k ACs per connection; NeuroBench
  sees the integer sum and charges one MAC per non-zero position. ours_AC = NB_ops + sum over positions of
  (k - 1 if k > 0) x (non-zero weights fed by that position).
- Head: the PyTorch head is one Linear on the token- and time-mean (analog, once per sample: NeuroBench MACs);
  the graph feeds every spike of every step and token into the head synapses (ACs).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from analysis import activity as A
from analysis.reference import record_reference

from .helpers_models import randomized_model

B = 6


def _import_neurobench():
    try:
        from neurobench.metrics.workload import SynapticOperations
        from neurobench.models import TorchModel
    except ImportError as e:  # a missing dev dependency is a failure, not a skip
        pytest.fail(f"neurobench 2.3.0 is required for this test (pip install -e '.[dev]'): {e}")
    from importlib.metadata import version
    assert version("neurobench") == "2.3.0", version("neurobench")
    return SynapticOperations, TorchModel


@pytest.fixture(scope="module")
def setup():
    SynapticOperations, TorchModel = _import_neurobench()
    from spikformer.data import load_dataset

    model = randomized_model("digits-2-64", seed=4).double()
    with torch.no_grad():  # positive BN bias: layers fire and residual sums reach 2 and more
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.bias.uniform_(0.3, 1.0)
    split = load_dataset("digits", 16, 1, seed=0)
    images = split.x_test[:B].double() * 2.0  # real digits, a brighter encoding so the first layer fires
    labels = split.y_test[:B]

    # NeuroBench, one SynapticOperations per layer (the metric only reads model.connection_hooks)
    names = {id(m): n for n, m in model.named_modules()}
    nb_model = TorchModel(model)
    nb_model.register_hooks()
    captured = {}  # the exact inputs each layer saw, for the by-design differences
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: captured.__setitem__(n, inp[0].detach().clone()))
             for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        preds = nb_model(images)
    for h in hooks:
        h.remove()
    nb = {}
    for hook in nb_model.connection_hooks:
        metric = SynapticOperations()
        nb[names[id(hook.layer)]] = metric(SimpleNamespace(connection_hooks=[hook]), preds, (images, labels))
    nb_model.cleanup_hooks()

    # ours, from the reference model's recorded spikes on the same images
    g = lower(spikformer_to_ir(model))
    _, spikes = record_reference(model, images)
    act = A.ActivityCounter(g)(A.reference_records(g, images, spikes, model.T))
    return model, nb, act.by_source(), act, captured


def _excess(x: torch.Tensor, weight: torch.Tensor) -> int:
    """sum over positions of (k - 1 for k > 0) x non-zero weights fed by that input channel (Linear)."""
    nnz_col = (weight != 0).sum(0).to(x.dtype)  # [in_features]
    extra = (x - (x != 0).to(x.dtype)).clamp(min=0)
    return int(round(float((extra * nnz_col).sum())))


def test_every_conv_and_linear_is_compared(setup):
    model, nb, ours, _, _ = setup
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert sorted(nb) == sorted(layers) and len(layers) == 5 + 12 + 1
    assert all(n in ours for n in layers)


def test_single_stream_and_analog_layers_equal_neurobench(setup):
    model, nb, ours, act, captured = setup
    same = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)] + \
        [n for n, _ in model.named_modules() if n.endswith(("proj_linear", "fc2_linear"))]
    assert len(same) == 5 + 4
    for n in same:
        r, b = ours[n], nb[n]
        assert r["ac_ops"] == round(b["Effective_ACs"] * B), (n, r["ac_ops"], b)
        assert r["mac_ops"] == round(b["Effective_MACs"] * B), (n, r["mac_ops"], b)
        assert r["dense_ops"] == round(b["Dense"] * B), (n, r["dense_ops"], b)
        assert abs(b["Effective_ACs"] * B - r["ac_ops"]) < 1e-6 and abs(b["Effective_MACs"] * B - r["mac_ops"]) < 1e-6
    # the first conv sees the analog image: MACs on both sides, and really non-zero
    assert nb["patch_embed.proj_conv"]["Effective_MACs"] > 0 and nb["patch_embed.proj_conv"]["Effective_ACs"] == 0
    assert sum(nb[n]["Effective_ACs"] for n in same) > 0


def test_residual_sum_layers_differ_exactly_by_the_integer_rule(setup):
    model, nb, ours, act, captured = setup
    residual = [n for n, _ in model.named_modules() if n.endswith(("q_linear", "k_linear", "v_linear",
                                                                   "fc1_linear"))]
    assert len(residual) == 8
    saw_integer = 0
    for n in residual:
        x = captured[n]
        w = dict(model.named_modules())[n].weight
        r, b = ours[n], nb[n]
        nb_ops = round((b["Effective_ACs"] + b["Effective_MACs"]) * B)
        # NeuroBench's ops are exactly our combined-input count (non-zero positions of the sum)
        assert r["combined_ops"] == nb_ops, n
        assert r["dense_ops"] == round(b["Dense"] * B), n
        if bool((x > 1).any()):  # an integer sum: NeuroBench calls it MACs, we count k ACs per connection
            saw_integer += 1
            assert b["Effective_ACs"] == 0 and b["Effective_MACs"] > 0, n
            assert r["ac_ops"] == nb_ops + _excess(x, w) and r["mac_ops"] == 0, n
            assert _excess(x, w) > 0
        else:  # the sum never exceeded 1 on these inputs: spikes on both sides, equal counts
            assert b["Effective_MACs"] == 0 and r["ac_ops"] == nb_ops, n
    assert saw_integer >= 5  # block 1's q/k/v and both fc1 at least


def test_head_differs_exactly_by_the_readout_rule(setup):
    model, nb, ours, act, captured = setup
    w = model.head.weight
    nnz_col = (w != 0).sum(0).double()  # non-zero weights fed by each feature
    mean = captured["head"]  # [B, D]: the token- and time-mean of the final residual sum (analog)
    assert bool(((mean != 0) & (mean != 1)).any())
    nb_expected = float(((mean != 0).double() * nnz_col).sum())
    assert round(nb["head"]["Effective_MACs"] * B) == round(nb_expected) and nb["head"]["Effective_ACs"] == 0
    # ours: every spike of every stream, step and token into the head synapses: sum of the residual values
    T, N = model.T, model.config.num_tokens
    value_sum = mean * (T * N)  # sum over steps and tokens of the residual sum, per sample and feature
    ours_expected = float((value_sum * nnz_col).sum())
    assert ours["head"]["ac_ops"] == round(ours_expected) and ours["head"]["mac_ops"] == 0
    assert abs(ours_expected - round(ours_expected)) < 1e-6
    assert ours["head"]["ac_ops"] > round(nb_expected)
