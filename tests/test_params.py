"""`peftbench params`: exact trainable counts for ViT-B/16, built on the meta device (no weights)."""

import json

from typer.testing import CliRunner

from peftbench.cli import app

# ViT-B/16 with a 100-class head (76,900 parameters included), from each paper's definition
VIT_B_100_CLASSES = {
    "linear": 76_900,
    "full": 85_875_556,
    "lora": 371_812,
    "lora_qkv": 371_812,
    "adapter": 233_668,
    "ssf": 282_724,
    "rlrr": 365_668,
    "vpt_deep": 169_060,
    "vpt_shallow": 84_580,
    "bitfit": 179_812,
    "fact_tt": 76_900 + 21_504,  # r = 8: U and V (2 x 768 x 8) + 12 blocks x 12 r²
    "convpass": 76_900 + 327_552,  # the paper's 0.33 M: 24 bypasses x (6,152 + 584 + 6,912)
    # ln_tune and difffit: the inserted_parameters PETL_Vision records for every VTAB-1k task
    # (OSU-MLB/PETL_Vision@245d262 tune_output/default_vtab/processed_vtab/<task>/{ln,difffit}/final_result.json)
    "ln_tune": 76_900 + 38_400,  # 25 LayerNorms x 2 x 768
    "difffit": 76_900 + 140_544,  # BitFit's 102,912 + the LayerNorm weights (19,200) + 2 x 768 x 12 factors
    "adapter_houlsby": 76_900 + 313_536,  # d = 8: 24 adapters x (2 x 768 x 8 + 8 + 768)
    "adapter_pfeiffer": 76_900 + 156_768,  # d = 8: 12 adapters x 13,064
    "repadapter": 76_900
    + 239_808,  # 24 x (768 x 8 + 8 + 768 x 4 + 768); the paper's 0.22 M is the weights alone, 24 x 9,216
    "adapter_plus": 76_900 + 165_984,  # d = 8: 12 x (2 x 768 x 8 + 8 + 768 + 768 channel scales)
    # noah at its default widths, 5 everywhere: 12 x (5 x 768 + 4 x 768 x 5 + 2 x 768 x 5 + 5 + 768);
    # the released subnets' counts: tests/methods/test_method_noah.py
    "noah": 76_900 + 331_836,
    "fact_tk": 76_900 + 13_952,  # r = 8 (the default): U and V (12,288) + C (8³) + P (8 x 144)
}


def test_vit_b16_counts_per_method_and_vtab_means():
    result = CliRunner().invoke(
        app, ["params", "--suite", "vtab", "--model", "vit_base_patch16_224", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    methods = json.loads(result.stdout)["methods"]
    for name, expected in VIT_B_100_CLASSES.items():
        assert methods[name]["with_head"]["cifar"] == expected, name  # cifar has 100 classes
        assert methods[name]["without_head"] == expected - 76_900, name
    means = {name: round(m["mean_with_head"] / 1e6, 2) for name, m in methods.items()}
    assert means["rlrr"] == 0.33 and means["ssf"] == 0.24 and means["linear"] == 0.04


def test_markdown_and_method_options():
    result = CliRunner().invoke(
        app, ["params", "-s", "demo", "-m", "lora", "-m", "vpt_deep", "--set", "rank=4", "--set", "prompt_len=5"]
    )
    assert result.exit_code == 0, result.output
    lora = next(line for line in result.stdout.splitlines() if line.startswith("| lora"))
    assert "| 8,192 " in lora  # 4 blocks x 2 (q, v) x (4 x 128 + 128 x 4)
    vpt = next(line for line in result.stdout.splitlines() if line.startswith("| vpt_deep"))
    assert "| 2,560 " in vpt  # 4 blocks x 5 prompts x 128
    assert "head" in result.stdout and "mean over the suite's 4 tasks" in result.stdout


def test_the_fewshot_legends_counts_are_noahs_baselines():
    """FacT Figure 6's legend (tasks/reference/published_fewshot_fgvc.csv, params_m): LoRA 295K is LoRA-8 on
    the fused qkv, Adapter and AdaptFormer 157K are bottlenecks of 8, VPT 74K is 8 deep prompts per block."""
    from peftbench.reports.published import published_rows
    from peftbench.suites import get_suite

    printed = {r.method: r.params_as_printed for r in published_rows(get_suite("fewshot_fgvc"))}
    cases = {"lora_qkv": ("lora", []), "adapter": ("adapter", []), "adaptformer": ("adaptformer", ["dim=8"]),
             "vpt_deep": ("vpt_deep", ["prompt_len=8"])}  # fmt: skip
    for method, (row, options) in cases.items():
        args = ["params", "--suite", "fewshot", "-m", method, "--format", "json"]
        result = CliRunner().invoke(app, [*args, *(a for kv in options for a in ("--set", kv))])
        count = json.loads(result.stdout)["methods"][method]["without_head"]
        assert round(count / 1e6, 3) == printed[row], method
