"""Records on disk: atomic writes, lookup by key, unreadable files skipped with a warning."""

import json
from pathlib import Path

import pytest

from peftbench import atomic
from peftbench.record import Metrics, Record
from peftbench.settings import TrainConfig
from peftbench.spec import RunSpec
from peftbench.store import Store

SPEC = RunSpec("demo", "count", "linear", "vit_micro_patch4_32", "random init", 42, TrainConfig(lr=0.01, epochs=20))


def _record(spec: RunSpec, top1: float) -> Record:
    return Record(spec.key, "run", spec, "ok", metrics=Metrics(top1, final_train_loss=0.5))


def _where(spec: RunSpec) -> dict:
    return _record(spec, 0.0).locator()


def test_put_then_get_round_trips(tmp_path: Path):
    store = Store(tmp_path)
    path = store.put(_record(SPEC, 50.0))
    assert path == tmp_path / "demo" / "count" / f"linear-seed42-{SPEC.key}.json"
    assert store.get(_where(SPEC)) == _record(SPEC, 50.0)
    assert [r.key for r in store.records("demo")] == [SPEC.key]
    assert store.get(_where(RunSpec(**{**SPEC.__dict__, "seed": 1}))) is None


def test_a_crash_while_writing_keeps_the_old_record_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    store = Store(tmp_path)
    store.put(_record(SPEC, 50.0))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C after the temp file is written, before it reached the disk

    monkeypatch.setattr(atomic.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(_record(SPEC, 99.0))
    monkeypatch.undo()
    assert store.get(_where(SPEC)).metrics.top1 == 50.0
    assert [p.name for p in (tmp_path / "demo" / "count").iterdir()] == [f"linear-seed42-{SPEC.key}.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"schema_version": 2, "key": "k"}', '{"schema": 9}'])
def test_unreadable_records_are_skipped_with_a_warning(tmp_path: Path, content: str):
    store = Store(tmp_path)
    store.put(_record(SPEC, 50.0))
    (tmp_path / "demo" / "count" / "broken.json").write_text(content)
    with pytest.warns(UserWarning, match="skipping unreadable record .*broken.json"):
        records = list(store.records())
    assert len(records) == 1


def test_records_are_written_as_sorted_indented_json_of_the_newest_schema(tmp_path: Path):
    path = Store(tmp_path).put(_record(SPEC, 50.0))
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert json.loads(text)["schema_version"] == 2 and json.loads(text)["spec"] == SPEC.flat()
