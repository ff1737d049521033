"""A target is one module (issue 24): tests/extra_target.py, registered on import, edits no other module, yet
spk-convert, spk-parity and spk-report run it, with its own console line, modes and report description; a
package's entry point in hw_backends.base.TARGET_ENTRY_POINTS makes a target known without any import."""
import json
import sys

import pytest

from commands import convert as convert_cli
from commands import parity as parity_cli
from commands import report as report_cli
from hw_backends import base

from . import extra_target
from .helpers_models import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("extra") / "model.pt")


def test_spk_convert_writes_the_targets_file(cli, ckpt, tmp_path):
    rc, out, err = cli(convert_cli.main, ["--list-targets"])
    assert rc == 0 and any(line.startswith("node-names ") for line in out.splitlines())
    path = tmp_path / "m.names.json"
    rc, out, err = cli(convert_cli.main, [ckpt, "--target", "node-names", "-o", path])
    assert rc == 0, err
    written = json.loads(path.read_text())
    nir_compile = base.get_backend("nir").compile  # the nir target lowers the same frontend graph to the same nodes
    from convert.frontend import spikformer_to_ir
    from convert.options import ConversionOptions
    from spikformer.checkpoint import load_checkpoint
    lowered = nir_compile(spikformer_to_ir(load_checkpoint(ckpt)[0]), ConversionOptions()).graph
    assert written["nodes"] == {n: type(node).__name__ for n, node in lowered.nodes.items()}
    assert written["model_info"]["converter"] == "spk-convert" and written["model_info"]["options"]["ssa"] == "auto"
    assert f"-> target node-names: {path}" in out
    assert f"  node names: {len(lowered.nodes)} nodes" in out and f"  wrote {path}" in out
    rc, out, err = cli(convert_cli.main, [ckpt, "--target", "node-names"])  # the default output: its suffix
    assert rc == 0, err
    assert ckpt.with_name("model.names.json").is_file()


def test_spk_parity_runs_it_in_float_semantics(cli, ckpt, tmp_path):
    out = tmp_path / "parity"
    rc, _, err = cli(parity_cli.main, [ckpt, "--target", "node-names", "--samples", "12", "--device", "cpu",
                                       "--no-progress", "--min-agreement", "1.0", "-o", out])
    assert rc == 0, err
    s = json.loads((out / "parity.json").read_text())
    assert s["run"]["target"] == "node-names" and s["run"]["mode"] == "float"  # its default mode
    assert s["overall"]["samples"] == 12 and s["overall"]["total_spike_mismatches"] == 0
    assert s["overall"]["prediction_agreement"] == 1.0
    rc, _, err = cli(parity_cli.main, [ckpt, "--target", "node-names", "--mode", "fixed", "-o", tmp_path / "no"])
    assert rc == 2 and "--target node-names has float semantics; use --mode float" in err
    assert not (tmp_path / "no").exists()


def test_spk_parity_runs_its_own_engine_and_counts_known_flips(cli, ckpt, tmp_path):
    """The target's engine (`--engine replay`, its flag `--replay-flips`) runs through spk-parity with no module
    but the target's naming it; the cross-check against the simulator finds exactly the spikes it flipped, in one
    layer, and fails the run; with none flipped it finds 0."""
    runs = {}
    for flips in (0, 3):
        out = tmp_path / f"replay{flips}"
        rc, stdout, err = cli(parity_cli.main, [ckpt, "--target", "node-names", "--engine", "replay", "--samples", "6",
                                                "--batch-size", "4", "--replay-flips", str(flips), "--device", "cpu",
                                                "--no-progress", "--min-agreement", "0", "-o", out])
        runs[flips] = json.loads((out / "parity.json").read_text())["engine_crosscheck"]
        if flips:  # 3 per run, 2 runs (batches of 4 and 2): the report is written, the exit code says it failed
            assert rc == 1 and "Replay differs from the float simulator (6 differences" in err
        else:
            assert rc == 0, err
    assert runs[0]["spike_mismatches_by_population"] == {}
    assert runs[3]["spike_mismatches"] == 6 and runs[3]["differences"] == 6
    assert list(runs[3]["spike_mismatches_by_population"].values()) == [6]
    assert runs[3]["spikes_compared"] == runs[0]["spikes_compared"]
    xc = runs[0]
    assert xc["engine"] == "Replay" and xc["simulator"] == "float" and xc["samples"] == 6 and xc["differences"] == 0
    assert xc["spikes_compared"] > 0 and xc["incidents"] == []
    rc, _, err = cli(parity_cli.main, [ckpt, "--target", "node-names", "--engine", "lava", "-o", tmp_path / "no"])
    assert rc == 2 and "--target node-names has no engine 'lava'; it runs on sim, --engine replay" in err


def test_spk_report_prices_it_with_its_own_defaults(cli, ckpt, tmp_path):
    out = tmp_path / "report"
    rc, stdout, err = cli(report_cli.main, [ckpt, "--target", "node-names", "--samples", "8", "--device", "cpu",
                                            "--no-progress", "--attention-samples", "1", "-o", out])
    assert rc == 0, err
    r = json.loads((out / "energy.json").read_text())
    assert r["run"]["target"] == "node-names" and r["run"]["mode"] == "float" and r["run"]["samples"] == 8
    assert r["run"]["target_description"] == extra_target.NodeNamesBackend.report_description
    assert r["energy_model"]["name"] == "cmos45"  # Backend's default energy model
    assert r["loihi_placement"] is None  # another target's section, not filled by this run
    assert r["totals"]["event_pj"] > 0 and r["layers"]
    assert {p.name for p in out.iterdir()} >= {"energy.json", "energy.md", "report.html", "attention.png"}
    assert "mode float, target node-names" in stdout
    rc, _, err = cli(report_cli.main, [ckpt, "--target", "node-names", "--mode", "fixed", "-o", tmp_path / "no"])
    assert rc == 2 and "--mode fixed runs on --target loihi, not node-names" in err


def test_an_installed_packages_entry_point_registers_its_target(tmp_path, monkeypatch):
    """A package that declares [spikformer_deploy.targets] in its metadata: the registry imports the module
    named there on first use."""
    dist = tmp_path / "plugin_targets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-targets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{base.TARGET_ENTRY_POINTS}]\nplugin-names = plugin_target\n")
    (tmp_path / "plugin_target.py").write_text(
        "from hw_backends.base import register\nfrom tests.extra_target import NodeNamesBackend\n\n\n"
        "@register\nclass PluginNames(NodeNamesBackend):\n    name = 'plugin-names'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_loaded", False)
    try:
        assert "plugin_target" not in sys.modules
        assert "plugin-names" in dict(base.list_backends())
        assert base.get_backend("plugin-names").default_suffix == ".names.json"
    finally:
        sys.modules.pop("plugin_target", None)
