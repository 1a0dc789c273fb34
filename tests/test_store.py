"""Records: schema, atomic writes, lookup by key."""
import json
from pathlib import Path

import pytest

from peftbench import store as store_module
from peftbench.spec import RunSpec
from peftbench.store import Store

SPEC = RunSpec("demo", "count", "linear", "vit_micro_patch4_32", "random init", 42, {"lr": 0.01, "epochs": 20})


def _record(spec: RunSpec, top1: float) -> dict:
    return {"schema": store_module.SCHEMA_VERSION, "key": spec.key, "spec": spec.__dict__, "status": "ok", "metrics": {"test_top1": top1}}


def test_key_is_stable_and_changes_with_any_field():
    same = RunSpec("demo", "count", "linear", "vit_micro_patch4_32", "random init", 42, {"epochs": 20, "lr": 0.01})
    assert same.key == SPEC.key  # settings order does not matter
    assert RunSpec(**{**SPEC.__dict__, "seed": 44}).key != SPEC.key
    assert RunSpec(**{**SPEC.__dict__, "settings": {"lr": 0.02, "epochs": 20}}).key != SPEC.key
    assert len(SPEC.key) == 16


def test_put_then_get_round_trips(tmp_path: Path):
    store = Store(tmp_path)
    path = store.put(_record(SPEC, 50.0))
    assert path == tmp_path / "demo" / "count" / f"linear-seed42-{SPEC.key}.json"
    assert store.get(SPEC)["metrics"]["test_top1"] == 50.0
    assert [r["key"] for r in store.records("demo")] == [SPEC.key]
    assert store.get(RunSpec(**{**SPEC.__dict__, "seed": 1})) is None


def test_a_crash_while_writing_keeps_the_old_record_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    store = Store(tmp_path)
    store.put(_record(SPEC, 50.0))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of json.dump

    monkeypatch.setattr(store_module.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(_record(SPEC, 99.0))
    monkeypatch.undo()
    assert store.get(SPEC)["metrics"]["test_top1"] == 50.0
    assert [p.name for p in (tmp_path / "demo" / "count").iterdir()] == [f"linear-seed42-{SPEC.key}.json"]


def test_unreadable_records_are_skipped_with_a_warning(tmp_path: Path):
    store = Store(tmp_path)
    store.put(_record(SPEC, 50.0))
    (tmp_path / "demo" / "count" / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipping unreadable record"):
        records = list(store.records())
    assert len(records) == 1
