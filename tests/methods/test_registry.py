"""Method registry: built-ins, the `peftbench.methods` entry-point group, name errors."""

import sys
from pathlib import Path

import pytest

from peftbench.errors import PeftbenchError
from peftbench.methods import _registry as registry

PLUGIN = '''
import dataclasses
from peftbench.methods.base import Method, freeze_all

@dataclasses.dataclass
class NormTuning(Method):
    """Tune only the LayerNorm affine parameters."""
    summary = "LayerNorm tuning (test plugin)"
    scale: float = 1.0

    def apply(self, model):
        freeze_all(model)
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.requires_grad_(True)
'''


def test_builtins_are_registered():
    assert {"full", "linear"} <= set(registry.all_methods())
    assert registry.resolve_method_names(["all"]) == list(registry.all_methods())
    assert registry.resolve_method_names(["linear", "full", "linear"]) == ["linear", "full"]


def test_unknown_method_lists_valid_names():
    with pytest.raises(PeftbenchError, match=r"unknown method 'lora2'; valid methods: .*full, linear"):
        registry.resolve_method_names(["full", "lora2"])


def test_an_installed_package_adds_a_method_through_entry_points(tmp_path: Path, monkeypatch):
    (tmp_path / "normtune_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "normtune_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: normtune-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[peftbench.methods]\nnormtune = normtune_plugin:NormTuning\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)  # entry points are read once per process
    cls = registry.get_method("normtune")
    assert cls.name == "normtune" and cls.summary.startswith("LayerNorm tuning")
    assert "scale" in cls.option_fields()
    sys.modules.pop("normtune_plugin", None)


def test_entry_points_are_read_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(registry, "entry_points", lambda group: calls.append(group) or [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    for _ in range(3):
        registry.get_method("linear")
        registry.all_methods()
    assert calls == [registry.ENTRY_POINT_GROUP]
