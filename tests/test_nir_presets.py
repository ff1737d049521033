"""Stock `nir.read(path)` (nir 1.0.8, its defaults: type_check=True, no patch) reads and type-checks the NIR export of
every preset, in both SSA orders where the order exports (qk_first gathers of the larger presets are refused with a
clear error, docs/nir.md section 4). Random weights, small images (the layer structure does not depend on the image
size) and at most two blocks (every block has the same nodes and shapes); channel counts, heads and T are the
preset's own."""
import nir
import numpy as np
import pytest
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hw_backends.nir import nir_io
from spikformer import Spikformer
from spikformer.presets import PRESETS, get_preset

SMALL_IMAGE = {"imagenet": 32, "dvs": 32, "cifar": 16}


def _small(name):
    cfg = get_preset(name)
    img = min(cfg.img_size, SMALL_IMAGE.get(cfg.layout, cfg.img_size))
    return cfg.with_(img_size=img, depth=min(cfg.depth, 2))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_stock_nir_read_type_checks_every_preset(name, tmp_path):
    cfg = _small(name)
    torch.manual_seed(0)
    frontend = spikformer_to_ir(Spikformer(cfg).eval())
    exported = []
    for order in ("kv_first", "qk_first"):
        g = lower(frontend, ssa_order=order)
        path = tmp_path / f"{order}.nir"
        try:
            nir_io.write_nir(path, g, model_info={"preset": name})
        except nir_io.NIRExportError as e:
            assert order == "qk_first" and "above the limit" in str(e) and "kv_first" in str(e), str(e)
            assert cfg.embed_dim >= 256, f"{name}: a small preset must export qk_first too"
            continue
        ng = nir.read(str(path))
        kinds = {type(n).__name__ for n in ng.nodes.values()}
        assert kinds <= {"Input", "Output", "Conv2d", "SumPool2d", "Scale", "LIF", "Threshold", "I"}, kinds
        assert all(int(n.groups) == 1 for n in ng.nodes.values() if isinstance(n, nir.Conv2d))
        out = ng.nodes["output"].output_type["output"]
        assert np.array_equal(out, [cfg.num_classes, 1, 1])
        back = nir_io.read_nir(path)  # the IR it describes exports to exactly this file
        assert set(back.nodes) == set(g.nodes)
        exported.append(order)
        del ng, back
    assert "kv_first" in exported
