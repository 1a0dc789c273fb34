"""RunSpec: a typed TrainConfig and the method's options, hashed as the flat form records have always stored."""

import dataclasses
import json
from pathlib import Path

import pytest

from peftbench import spec as spec_module
from peftbench.settings import TrainConfig
from peftbench.spec import KEY_NEUTRAL, RunSpec, flat_train_settings

SPEC = RunSpec(
    "demo", "count", "lora", "vit_micro_patch4_32", "random init", 42, TrainConfig(lr=0.01, epochs=20), {"rank": 4}
)
FIXTURES = Path(__file__).parent / "fixtures" / "results_d110afe" / "vtab1k"


def test_key_is_stable_and_changes_with_any_field():
    same = RunSpec(
        "demo", "count", "lora", "vit_micro_patch4_32", "random init", 42, TrainConfig(epochs=20, lr=0.01), {"rank": 4}
    )
    assert same.key == SPEC.key and len(SPEC.key) == 16
    assert dataclasses.replace(SPEC, seed=44).key != SPEC.key
    assert SPEC.with_settings({"lr": 0.02}).key != SPEC.key
    assert SPEC.with_settings({"rank": 8}).key != SPEC.key
    assert SPEC.with_settings({"lr": 0.01}).key == SPEC.key


def test_data_read_in_another_layout_is_another_run_and_the_suite_layout_keeps_old_keys():
    tfds = dataclasses.replace(SPEC, data_layout="tfds")  # VTAB-1k from TFDS: not the JPEG release's pixels
    assert tfds.key != SPEC.key and tfds.flat()["data_layout"] == "tfds" and "data_layout" not in SPEC.flat()
    assert RunSpec.from_flat(tfds.flat()) == tfds and RunSpec.from_flat(SPEC.flat()).data_layout == ""


def test_the_flat_form_is_the_fields_with_one_settings_object():
    flat = SPEC.flat()
    assert set(flat) == {
        "suite",
        "task",
        "method",
        "model",
        "weights",
        "seed",
        "settings",
        "protocol",
        "train_split",
        "eval_split",
        "recipe",
    }
    later = {"scheduler", "precision", "head_init"}  # added later, left out at their key-neutral values
    assert flat["settings"] == {
        **{k: v for k, v in dataclasses.asdict(SPEC.train).items() if k not in later},
        "rank": 4,
    }
    assert flat_train_settings(dataclasses.replace(SPEC.train, scheduler="timm-epoch"))["scheduler"] == "timm-epoch"
    assert RunSpec.from_flat(flat) == SPEC


def test_best_test_specs_carry_their_protocol_settings_in_the_flat_form():
    best = dataclasses.replace(SPEC, protocol="best-test", eval_every=2, settings_source="default")
    assert best.flat()["settings"]["eval_every"] == 2 and best.flat()["settings"]["settings_source"] == "default"
    assert RunSpec.from_flat(best.flat()) == best and "eval_every" not in SPEC.flat()["settings"]


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("*/*-seed*.json")) + sorted(FIXTURES.glob("*/tune/*.json")), ids=lambda p: p.name
)
def test_specs_written_by_the_previous_commit_hash_to_their_stored_keys(path: Path):
    raw = json.loads(path.read_text())
    if raw["kind"] != "final":  # a final's key is its unit's (the spec plus its trials' keys)
        assert RunSpec.from_flat(raw["spec"]).key == raw["key"]


def test_a_setting_added_later_leaves_old_keys_alone_at_its_key_neutral_value(monkeypatch):
    """The rule of spec.py, with a hypothetical later field: hashed only when it differs from the old behaviour."""
    Later = dataclasses.make_dataclass(
        "Later",
        [("lr_per_epoch", bool, dataclasses.field(default=True, metadata={KEY_NEUTRAL: False}))],
        bases=(TrainConfig,),
        frozen=True,
    )
    old = flat_train_settings(TrainConfig())
    assert flat_train_settings(Later(lr_per_epoch=False)) == old  # the old behaviour: the old flat form, the old key
    assert flat_train_settings(Later(lr_per_epoch=True)) == {**old, "lr_per_epoch": True}
    written_before = SPEC.flat()  # a record written before the field existed
    monkeypatch.setattr(spec_module, "TrainConfig", Later)
    read = RunSpec.from_flat(written_before)
    assert read.train.lr_per_epoch is False and read.key == SPEC.key
