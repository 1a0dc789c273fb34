"""The typed Record: every format peftbench has written reads back, the newest round-trips, bad input is one line."""

import dataclasses
import json
from pathlib import Path

import pytest

from peftbench.errors import PeftbenchError
from peftbench.record import SCHEMA_VERSION, Record
from peftbench.reports.make import make_report

FIXTURES = Path(__file__).parent / "fixtures"


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / folder).glob("**/*.json") if ".sweeps" not in p.parts)


def _read(path: Path) -> Record:
    return Record.from_json(json.loads(path.read_text()), str(path))


@pytest.mark.parametrize("path", _files("results_d110afe"), ids=lambda p: p.name)
def test_a_schema_1_record_reads_with_its_key_and_round_trips(path: Path):
    raw = json.loads(path.read_text())
    record = _read(path)
    assert (record.key, record.kind, record.status) == (raw["key"], raw["kind"], raw["status"])
    assert record.spec.flat() == raw["spec"]  # the spec is read back exactly: the same content, the same hash
    if record.kind != "final":  # a final's key hashes its trials too (the unit's key)
        assert record.spec.key == raw["key"]
    assert (record.provenance.device, record.provenance.git_commit) == (raw["device"], raw["git_commit"])
    assert record.timing.wall_seconds == raw["wall_seconds"] and record.reason == raw.get("reason", "")
    if record.ok:
        name = "val_top1" if record.kind == "trial" else "test_top1"
        assert (record.metrics.name, record.metrics.top1) == (name, raw["metrics"][name])
        assert record.metrics.best_test_top1 == raw["metrics"].get("best_test_top1")
        assert record.params.trainable == raw["params"]["trainable"]
        assert record.execution.fused_attention == raw["fused_attention"]
    assert record.unit.session == raw["session"] and record.selection == raw.get("selection")
    again = Record.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and again.to_json()["schema_version"] == SCHEMA_VERSION == 2


@pytest.mark.parametrize("path", _files("results_3e359cc"), ids=lambda p: p.name)
def test_a_record_of_the_first_format_reads_with_what_it_left_out_filled_in(path: Path):
    raw = json.loads(path.read_text())
    record = _read(path)
    assert record.key == raw["key"] and record.kind == "run" and record.ok
    assert record.spec.recipe == "vtab-resize"  # the only preprocessing that commit had
    assert record.spec.train.schedule == "cosine" and record.spec.train.cooldown_epochs == 0
    assert record.metrics.top1 == raw["metrics"]["test_top1"] and record.execution.fused_attention is None
    assert record.timing.eval_images_per_second is None and record.data.fingerprints == {}


def test_the_first_format_reports_the_same_table_it_did_before():
    before = (FIXTURES / "report_3e359cc.md").read_text()
    now = make_report(FIXTURES / "results_3e359cc", "vtab", "md")
    assert now == before.replace("recipes: ?", "recipes: vtab-resize")  # the migration names the recipe used


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"schema": 7, "key": "k"}, "unknown record schema 7; this peftbench reads 1, 2"),
        ({"key": "k", "status": "ok"}, "unknown record schema None"),
        ({"schema_version": 2, "key": "k", "status": "ok"}, "not a peftbench record (KeyError: 'spec')"),
        ({"schema_version": 2, "key": "k", "status": "done", "spec": {}}, "not a peftbench record"),
    ],
)
def test_what_is_not_a_record_gets_a_one_line_error(raw, message: str):
    with pytest.raises(PeftbenchError, match="^where.json: ") as caught:
        Record.from_json(raw, "where.json")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_records_are_immutable():
    record = _read(_files("results_d110afe")[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "failed"


def test_a_record_with_every_part_round_trips_through_json():
    from peftbench.record import (
        DataInfo,
        Execution,
        Memory,
        Metrics,
        Params,
        Predictions,
        Provenance,
        ScheduleTrace,
        Timing,
        UnitInfo,  # fmt: skip
    )
    from peftbench.settings import TrainConfig
    from peftbench.spec import RunSpec

    spec = RunSpec("demo", "count", "lora", "vit_micro_patch4_32", "random init", 42,
                   TrainConfig(scheduler="timm-epoch", precision="fp16"), {"rank": 4})  # fmt: skip
    record = Record(
        spec.key, "trial", spec, "ok", Provenance("cpu", {"torch": "2"}, "abc", "2026-12-01T00:00:00+00:00"),
        metrics=Metrics(90.0, "val", 0.1, 91.0, 3, ((1, 80.0), (3, 91.0))), params=Params(10, 5, 5, 100),
        timing=Timing(2.0, 1.0, 100.0, 0.5, 200.0), memory=Memory(900.0, "process max RSS"),
        execution=Execution(True, False, False, True), schedule=ScheduleTrace("timm-epoch", "cosine", (1e-7, 1e-3)),
        data=DataInfo("train800", 800, "val200", 200, {"name": "vtab-resize"}, {"val200": {"sha256": "x"}}),
        selection={"chosen_point": {"lr": 0.1}}, unit=UnitInfo("s", "w", "main", {"lr": 0.1}),
        adapted={"library": "peft", "version": "0.21.2", "label": "LoRA, r=4", "config": {"r": 4}},
        predictions=Predictions("val200", 200, "x.predictions.npz", "ab12"),
    )  # fmt: skip
    raw = json.loads(json.dumps(record.to_json()))
    assert set(raw) == {f.name for f in dataclasses.fields(Record)} - {"reason", "traceback"}
    assert Record.from_json(raw) == record
