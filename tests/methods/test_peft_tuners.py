"""Hugging Face peft's tuners as peftbench methods: the family, its defaults (peft's own), exact
counts (hand formulas and peft's get_nb_trainable_parameters), one-line refusals, records that name
peft's version and config, and our `lora` against peft's LoRA on split q / v projections."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import peft
import pytest
import timm
import torch
from typer.testing import CliRunner

import peftbench
from peftbench.cli import app
from peftbench.errors import PeftbenchError
from peftbench.methods import all_methods, get_method
from peftbench.methods import peft_tuners as family
from peftbench.record import Record

D, DEPTH, CLASSES = 128, 4, 5  # vit_micro_patch4_32
PEFT_METHODS = sorted(name for name in all_methods() if name.startswith("peft-"))
KIT = Path(__file__).resolve().parents[2] / "tools" / "faithfulness"


def micro(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return peftbench.build_model(name, "vit_micro_patch4_32", CLASSES, pretrained=False, **options)


def trainable_without_head(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head."))


def test_the_family_is_listed_with_a_summary_each():
    result = CliRunner().invoke(app, ["list", "methods"])
    assert result.exit_code == 0, result.output
    assert len(PEFT_METHODS) >= 10
    for name in ("peft-lora", "peft-dora", "peft-vera", "peft-oft", "peft-boft", "peft-hra", "peft-loha",
                 "peft-lokr", "peft-ia3", "peft-fourierft"):  # fmt: skip
        assert name in PEFT_METHODS and name in result.stdout
        assert "peft" in get_method(name).summary


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_option_defaults_are_the_installed_peft_defaults(name: str):
    tuner = get_method(name).tuner
    defaults = {f.name: f.default for f in dataclasses.fields(getattr(peft, tuner.config))}
    for field, _, default, _ in tuner.fields:
        assert defaults[field] == default, (name, field)


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("peft-lora", {}, DEPTH * (8 * D + 3 * D * 8)),  # A (r x in), B (3D x r) on every fused qkv
        ("peft-lora", {"r": 4}, DEPTH * (4 * D + 3 * D * 4)),
        ("peft-dora", {}, DEPTH * (8 * D + 3 * D * 8 + 3 * D)),  # + the magnitude vector (out)
        ("peft-vera", {}, DEPTH * (3 * D + 256)),  # lambda_b (out), lambda_d (r); the projections are frozen
        ("peft-ia3", {}, DEPTH * (3 * D + 4 * D)),  # qkv outputs, fc2 inputs (hidden 4D)
    ],
)
def test_trainable_counts_by_hand_and_as_peft_counts_them(name: str, options: dict, expected: int):
    model = micro(name, **options)
    assert trainable_without_head(model) == expected
    method = get_method(name)(**options)
    torch.manual_seed(0)
    reference = peft.get_peft_model(timm.create_model("vit_micro_patch4_32", num_classes=CLASSES), method.peft_config())
    assert reference.get_nb_trainable_parameters()[0] == expected  # peft's own count (its model freezes the head)
    counted = CliRunner().invoke(app, ["params", "-s", "demo", "-m", name, *sum((["--set", f"{k}={v}"] for k, v in options.items()), []),
                                       "--model", "vit_micro_patch4_32", "--format", "json"])  # fmt: skip
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.stdout)["methods"][name]["without_head"] == expected


def test_our_lora_equals_peft_lora_on_split_q_and_v_projections():
    """tools/faithfulness/peft_lora.py, run here since peft is installed: fp64 logits, gradients,
    dropout masks, counts, inits and merge against peft's LoRA on q and v Linears."""
    sys.path.insert(0, str(KIT))
    try:
        import peft_lora
        from _common import Report

        report = Report("lora vs peft", "peft", "")
        peft_lora.check(report)
    finally:
        sys.path.remove(str(KIT))
    assert report.faithful and len(report.rows) >= 5


def test_merge_is_peft_merge_and_unload_into_a_plain_timm_vit():
    model = micro("peft-dora")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    merged = peftbench.merge(model)
    assert not any("peft" in type(m).__module__ for m in merged.modules())
    assert family.TUNER_ATTRIBUTE not in merged.__dict__ and family.TUNER_ATTRIBUTE in model.__dict__
    assert set(merged.state_dict()) == set(timm.create_model("vit_micro_patch4_32", num_classes=CLASSES).state_dict())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"config": "{oops"}, "peft-lora: config must be a JSON object"),
        ({"config": '{"r": 4}'}, "peft-lora: set r with --set r=..., not inside config"),
        ({"config": '{"no_such_field": 1}'}, "peft-lora: peft 0"),
        (
            {"target_modules": "blocks\\.99\\.attn\\.qkv"},
            "peft-lora: target_modules 'blocks\\.99\\.attn\\.qkv' matches no",
        ),
        ({"target_modules": "("}, "peft-lora: target_modules is not a regular expression"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict, message: str):
    with pytest.raises(PeftbenchError) as error:
        micro("peft-lora", **options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_without_peft_or_without_the_tuner_the_method_is_refused_by_name(monkeypatch):
    monkeypatch.delattr(peft, "HRAConfig")
    with pytest.raises(PeftbenchError, match=rf"peft-hra needs peft's HRAConfig, which peft {peft.__version__} lacks"):
        micro("peft-hra")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    with pytest.raises(PeftbenchError, match=r"method 'peft-lora' needs Hugging Face peft .*peftbench\[peft\]"):
        micro("peft-lora")


def test_records_name_peft_and_its_config_and_the_report_shows_tuner_and_rank(tmp_path: Path):
    out = tmp_path / "results"
    args = ["run", "-m", "peft-dora", "-m", "peft-vera", "--suite", "demo", "--task", "textures", "--epochs", "1",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [Record.from_json(json.loads(p.read_text())) for p in out.glob("demo/**/*.json")]
    adapted = {r.spec.method: r.adapted for r in records}
    assert adapted["peft-dora"]["version"] == peft.__version__ and adapted["peft-dora"]["config"]["use_dora"] is True
    assert adapted["peft-vera"]["tuner"] == "VERA" and adapted["peft-vera"]["config"]["r"] == 256
    report = CliRunner().invoke(app, ["report", "--suite", "demo", "--results", str(out)])
    assert report.exit_code == 0, report.output
    assert "peft-dora (DoRA, r=8)" in report.stdout and "peft-vera (VeRA, r=256)" in report.stdout


def test_all_and_patterns_select_the_family_and_all_leaves_it_out_without_peft(monkeypatch):
    from peftbench.methods import resolve_method_names

    assert sorted(resolve_method_names(["peft-*"])) == PEFT_METHODS
    assert resolve_method_names(["rlrr", "peft-?ora"]) == ["rlrr", "peft-lora", "peft-dora"]  # registry order
    assert set(PEFT_METHODS) < set(resolve_method_names(["all"]))
    monkeypatch.setattr(family.PeftTuner, "available", classmethod(lambda cls: False))
    everything = resolve_method_names(["all"])
    assert "rlrr" in everything and not any(n.startswith("peft-") for n in everything)
    with pytest.raises(PeftbenchError, match=r"method 'peft-dora' needs Hugging Face peft ≥ 0.13 \(pip install"):
        resolve_method_names(["peft-dora"])
    with pytest.raises(PeftbenchError, match="no method matches 'nope-\\*'"):
        resolve_method_names(["nope-*"])
