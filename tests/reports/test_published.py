"""Published reference rows (RLRR paper Tables 1 and 2; NOAH, FacT, Convpass, RepAdapter, PETL_Vision rows): loading,
recomputed means, pairing rules, deltas."""

import dataclasses
import itertools
import math

import pandas as pd
import pytest

from peftbench.errors import PeftbenchError
from peftbench.methods import all_methods
from peftbench.reports.leaderboard import FLAT_MEAN, GROUP_MEAN, Leaderboard, group_column
from peftbench.reports.published import (
    BACKBONE_FAMILIES,
    BACKBONES,
    PublishedRow,
    deltas,
    means,
    paired_method,
    pairing,
    published_rows,
    recomputed_means,
    with_published,
)
from peftbench.spec import PROTOCOLS
from peftbench.suites import get_suite

VTAB = get_suite("vtab1k")
FGVC = get_suite("fgvc")
ORIG = "vit_base_patch16_224.orig_in21k"
AUGREG = "vit_base_patch16_224.augreg_in21k"
OUR_METHODS = tuple(sorted(all_methods()))


def _row(suite, method: str, backbone: str = "vit_b16_in21k") -> PublishedRow:
    (row,) = [r for r in published_rows(suite) if r.method == method and r.backbone == backbone]
    return row


# ---------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "suite, methods",
    [
        (
            VTAB,
            {
                "full",
                "linear",
                "adapter",
                "vpt_shallow",
                "vpt_deep",
                "lora",
                "ssf",
                "rlrr",
                "noah",
                "fact_tt",
                "fact_tk",
                "convpass",
                "repadapter",
                "adapter_houlsby",
                "adapter_pfeiffer",
                "ln_tune",
                "difffit",
                "bitfit",  # Swin-B only
            },
        ),
        (FGVC, {"full", "linear", "adapter", "vpt_deep", "lora", "ssf", "rlrr"}),
    ],
)
def test_rows_load_with_every_task(suite, methods):
    rows = published_rows(suite)
    assert {r.method for r in rows} == methods
    for row in rows:
        if BACKBONE_FAMILIES[row.backbone] == "vit":
            assert list(row.values) == [t.name for t in suite.tasks] and not row.group_means_as_printed
        else:  # the Swin-B and ConvNeXt-B sources print group means only
            assert row.values == {} and list(row.group_means_as_printed) == list(suite.groups)
        assert all(0 < v <= 100 for v in [*row.values.values(), *row.group_means_as_printed.values()])
        assert row.backbone in BACKBONES and row.protocol in {"tune", "best-test", "unknown"}


# FacT Table 2 (Swin-B) and Convpass Table 3 (Swin-B, ConvNeXt-B): the printed Avg., a mean of group means
PRINTED_AVERAGES = {
    ("full", "swin_b_in22k"): 75.0,
    ("linear", "swin_b_in22k"): 62.6,
    ("bitfit", "swin_b_in22k"): 65.6,
    ("vpt_shallow", "swin_b_in22k"): 66.7,
    ("vpt_deep", "swin_b_in22k"): 71.6,
    ("fact_tt", "swin_b_in22k"): 77.4,
    ("convpass", "swin_b_in22k"): 78.1,
    ("full", "convnext_b_in22k"): 74.0,
    ("linear", "convnext_b_in22k"): 63.6,
}


def test_rows_without_cells_keep_their_printed_group_means():
    rows = {(r.method, r.backbone): r for r in published_rows(VTAB) if not r.values}
    assert set(rows) == set(PRINTED_AVERAGES)
    for key, printed in PRINTED_AVERAGES.items():
        m = recomputed_means(rows[key], VTAB)
        assert round(m[GROUP_MEAN], 1) == printed, key
        groups = [m[group_column(g)] for g in VTAB.groups]
        assert m[FLAT_MEAN] == pytest.approx((7 * groups[0] + 4 * groups[1] + 8 * groups[2]) / 19)  # 7, 4, 8 tasks
        assert rows[key].protocol == "unknown"  # neither paper says where its baselines come from or releases Swin code
    assert round(recomputed_means(rows["full", "swin_b_in22k"], VTAB)[FLAT_MEAN], 3) == 72.463  # 1376.8 / 19
    bitfit = rows["bitfit", "swin_b_in22k"]
    assert [recomputed_means(bitfit, VTAB)[group_column(g)] for g in VTAB.groups] == [74.2, 80.1, 42.4]
    assert bitfit.params_as_printed == 0.201  # head excluded ("# of trainable parameters in backbones")


def test_a_row_with_some_cells_missing_is_an_error():
    rlrr = _row(VTAB, "rlrr")
    partial = dataclasses.replace(rlrr, values={k: v for k, v in rlrr.values.items() if k != "dmlab"})
    with pytest.raises(PeftbenchError, match="row 'rlrr' lacks tasks dmlab"):
        recomputed_means(partial, VTAB)
    swin = _row(VTAB, "full", "swin_b_in22k")
    two_groups = dataclasses.replace(swin, group_means_as_printed={"natural": 79.2, "specialized": 86.2})
    with pytest.raises(PeftbenchError, match="row 'full' lacks group means structured_mean"):
        recomputed_means(two_groups, VTAB)


def test_cells_and_params_as_printed():
    rlrr = _row(VTAB, "rlrr")
    assert (rlrr.values["cifar"], rlrr.values["smallnorb_ele"], rlrr.params_as_printed) == (75.6, 43.6, 0.33)
    # NOAH, FacT and Convpass print the mean of group means: NOAH's 75.5 and Convpass's 76.6 from the cells
    assert round(recomputed_means(_row(VTAB, "noah"), VTAB)[GROUP_MEAN], 1) == 75.5
    assert round(recomputed_means(_row(VTAB, "convpass"), VTAB)[GROUP_MEAN], 1) == 76.6
    assert round(recomputed_means(_row(VTAB, "fact_tk"), VTAB)[GROUP_MEAN], 1) == 75.6
    assert math.isnan(_row(VTAB, "ln_tune").params_as_printed)  # PETL_Vision's result files print no Params
    assert rlrr.protocol == "best-test" and _row(VTAB, "vpt_deep").protocol == "tune"
    assert _row(FGVC, "linear").params_as_printed == 0.18  # head included, as the RLRR paper counts
    assert _row(FGVC, "lora").protocol == "unknown"
    with pytest.raises(dataclasses.FrozenInstanceError):
        rlrr.method = "x"


# FacT Figure 6's and Convpass Figure 5's Average panels, read from the vector figures: 1/2/4/8/16 shots
FEWSHOT_1_AND_16_SHOTS = {"noah": (39.816, 76.478), "lora": (39.75, 75.234), "adapter": (39.764, 73.08),
                          "adaptformer": (40.12, 75.033), "vpt_deep": (26.076, 71.948), "fact_tt": (43.827, 77.683),
                          "convpass": (42.904, 78.487)}  # fmt: skip


def test_fewshot_rows_are_the_figures_average_curves_as_group_means():
    fewshot = get_suite("fewshot_fgvc")
    rows = {r.method: r for r in published_rows(fewshot)}
    assert set(rows) == set(FEWSHOT_1_AND_16_SHOTS)
    for method, (one, sixteen) in FEWSHOT_1_AND_16_SHOTS.items():
        row = rows[method]
        assert row.values == {} and list(row.group_means_as_printed) == list(fewshot.groups)
        m = recomputed_means(row, fewshot)
        assert (m[group_column("1-shot")], m[group_column("16-shot")]) == (one, sixteen)
        assert m[FLAT_MEAN] == pytest.approx(m[GROUP_MEAN])  # 15 tasks at every shot count
        assert row.backbone == "vit_b16_in21k" and row.protocol == "unknown"
    assert rows["lora"].params_as_printed == 0.295 and math.isnan(rows["convpass"].params_as_printed)
    # NOAH's few-shot Adapter row is NOAH's Adapter-8, ours (on VTAB-1k the Adapter row is VPT's adapter)
    assert paired_method(rows["adapter"]) == "adapter" and paired_method(_row(VTAB, "adapter")) is None
    assert paired_method(rows["lora"]) == "lora_qkv"


def test_a_fewshot_board_shows_the_curves_as_group_means():
    fewshot = get_suite("fewshot_fgvc")
    cells = {t.name: 50.0 for t in fewshot.tasks}
    table = pd.DataFrame([{**cells, **means(cells, fewshot)}], index=pd.Index(["adapter"], name="Method"))
    run = {"method": "adapter", "method_name": "adapter", "model": ORIG, "family": "vit", "protocol": "default"}
    board = with_published(Leaderboard(fewshot, table, row_runs={"adapter": run}))
    noah = board.table.loc["noah (published, vit_b16_in21k, unknown)"]
    assert noah[group_column("1-shot")] == 39.816 and noah[FLAT_MEAN] == pytest.approx(58.6556)
    assert (
        "adapter (published, vit_b16_in21k, unknown): no delta (adapter: published row's protocol is not stated)."
        in (board.notes)
    )


def test_other_suites_have_no_published_rows():
    assert published_rows(get_suite("demo")) == []


# ------------------------------------------------------------------------------------------------ means


def test_rlrr_vtab_means_recomputed_from_cells():
    m = recomputed_means(_row(VTAB, "rlrr"), VTAB)
    assert round(m[FLAT_MEAN], 2) == 74.54  # 1416.2 / 19; printed "74.5"
    assert round(m[GROUP_MEAN], 2) == 76.75  # printed 76.7 by PACE
    # The printed natural mean is 82.7; the cells give 82.64: proof the printed column is not read.
    assert [round(m[group_column(g)], 2) for g in VTAB.groups] == [82.64, 85.8, 61.81]


def test_single_group_suite_means_coincide():
    m = recomputed_means(_row(FGVC, "rlrr"), FGVC)
    assert round(m[FLAT_MEAN], 2) == 90.5  # printed 90.4
    assert m[FLAT_MEAN] == m[GROUP_MEAN] == m[group_column("fgvc")]


def test_means_are_nan_where_a_task_is_missing():
    values = {t.name: 50.0 for t in VTAB.tasks if t.name != "dmlab"}
    m = means(values, VTAB)
    assert m[group_column("natural")] == 50.0 and m[group_column("specialized")] == 50.0
    assert all(math.isnan(m[k]) for k in (group_column("structured"), FLAT_MEAN, GROUP_MEAN))


# ---------------------------------------------------------------------------------------------- pairing


def test_same_method_backbone_protocol_is_comparable():
    p = pairing(_row(VTAB, "rlrr"), "rlrr", ORIG, "best-test")
    assert p.comparable and p.reason == ""
    assert pairing(_row(VTAB, "rlrr", "vit_b16_augreg_in21k"), "rlrr", AUGREG, "best-test").comparable
    assert pairing(_row(VTAB, "vpt_deep"), "vpt_deep", ORIG, "tune").comparable
    assert pairing(_row(FGVC, "full"), "full", ORIG, "tune").comparable


@pytest.mark.parametrize("model", [AUGREG, "vit_base_patch16_224", "vit_base_patch16_224.augreg_in21k_ft_in1k"])
def test_backbone_must_match(model):
    p = pairing(_row(VTAB, "rlrr"), "rlrr", model, "best-test")
    assert not p.comparable and p.reason == f"backbone differs (published vit_b16_in21k, ours {model})"


def test_ssf_row_is_augreg():
    ssf = _row(VTAB, "ssf", "vit_b16_augreg_in21k")
    assert pairing(ssf, "ssf", ORIG, "best-test").reason == (
        "backbone differs (published vit_b16_augreg_in21k, ours vit_base_patch16_224.orig_in21k)"
    )
    assert pairing(ssf, "ssf", AUGREG, "best-test").comparable


def test_published_lora_is_noah_fused_qkv():
    lora = _row(VTAB, "lora")
    assert pairing(lora, "lora_qkv", ORIG, "best-test").comparable
    p = pairing(lora, "lora", ORIG, "best-test")
    assert not p.comparable
    assert p.reason == "published LoRA row is NOAH's LoRA-8 on the fused qkv (0.29 M), not lora (q/v LoRA)"
    assert pairing(lora, "full", ORIG, "best-test").reason == "method differs (published lora, ours full)"


def test_published_adapter_is_vpts_adapter():
    adapter = _row(VTAB, "adapter")
    p = pairing(adapter, "adapter", ORIG, "tune")
    assert not p.comparable
    assert p.reason == "published Adapter row is VPT's adapter (0.27 M), not adapter (NOAH's Adapter-8)"
    assert pairing(_row(FGVC, "adapter"), "adapter", ORIG, "tune").reason == (
        "published Adapter row is VPT's adapter (0.41 M), not adapter (NOAH's Adapter-8)"
    )
    assert pairing(adapter, "adaptformer", ORIG, "tune").reason == (
        "method differs (published adapter, ours adaptformer)"
    )


@pytest.mark.parametrize(
    "method, ours, published",
    [
        ("rlrr", "tune", "best-over-test"),
        ("rlrr", "default", "best-over-test"),
        ("lora", "paper", "best-over-test"),
        ("vpt_deep", "best-test", "tune"),
        ("full", "default", "tune"),
    ],
)
def test_protocol_must_match(method, ours, published):
    p = pairing(_row(VTAB, method), "lora_qkv" if method == "lora" else method, ORIG, ours)
    assert not p.comparable and p.reason == f"protocol differs (published {published}, ours {ours})"


def test_row_without_stated_protocol_pairs_with_nothing():
    lora = _row(FGVC, "lora")
    for method, protocol in itertools.product(("lora", "lora_qkv"), PROTOCOLS):
        assert pairing(lora, method, ORIG, protocol) == pairing(lora, "x", "y", protocol)
        assert pairing(lora, method, ORIG, protocol).reason == "published row's protocol is not stated"


def test_first_mismatch_is_named():
    # backbone, method and protocol all differ: the backbone is named
    assert pairing(_row(VTAB, "ssf", "vit_b16_augreg_in21k"), "lora", ORIG, "tune").reason.startswith("backbone")
    # method and protocol differ: the method is named
    assert pairing(_row(VTAB, "rlrr"), "ssf", ORIG, "tune").reason == "method differs (published rlrr, ours ssf)"


def test_unknown_protocol_is_an_error():
    with pytest.raises(PeftbenchError, match="unknown protocol"):
        pairing(_row(VTAB, "rlrr"), "rlrr", ORIG, "best")


@pytest.mark.parametrize("suite", [VTAB, FGVC])
def test_each_row_pairs_with_at_most_one_of_our_cells(suite):
    models = (ORIG, AUGREG, "vit_base_patch16_224")
    for row in published_rows(suite):
        hits = [c for c in itertools.product(OUR_METHODS, models, PROTOCOLS) if pairing(row, *c).comparable]
        unpaired = row.method == "adapter" or row.protocol == "unknown"
        assert len(hits) == (0 if unpaired else 1), (row.method, row.backbone, hits)


# ----------------------------------------------------------------------------------------------- deltas


def test_deltas_on_a_hand_made_case():
    rlrr = _row(VTAB, "rlrr")
    ours = dict(rlrr.values)
    ours["cifar100"] = ours.pop("cifar") + 1.9  # an alias is accepted
    ours["dmlab"] -= 3.8
    d = deltas(ours, rlrr, VTAB)
    assert d["cifar"] == pytest.approx(1.9) and d["dmlab"] == pytest.approx(-3.8) and d["dtd"] == 0
    assert d[group_column("natural")] == pytest.approx(1.9 / 7)
    assert d[group_column("specialized")] == pytest.approx(0)
    assert d[group_column("structured")] == pytest.approx(-3.8 / 8)
    assert d[FLAT_MEAN] == pytest.approx(-1.9 / 19)
    assert d[GROUP_MEAN] == pytest.approx((1.9 / 7 - 3.8 / 8) / 3)
    assert list(d)[:19] == [t.name for t in VTAB.tasks]


def test_deltas_nan_where_ours_is_missing():
    rlrr = _row(VTAB, "rlrr")
    d = deltas({"cifar": 80.6, "eurosat": 95.2}, rlrr, VTAB)
    assert d["cifar"] == pytest.approx(5.0) and d["eurosat"] == 0
    assert math.isnan(d["svhn"]) and math.isnan(d[FLAT_MEAN]) and math.isnan(d[GROUP_MEAN])
    assert math.isnan(d[group_column("specialized")])


def test_deltas_against_a_row_without_cells_are_group_means_only():
    swin_full = _row(VTAB, "full", "swin_b_in22k")
    d = deltas({t.name: 80.0 for t in VTAB.tasks}, swin_full, VTAB)
    assert all(math.isnan(d[t.name]) for t in VTAB.tasks)
    assert d[FLAT_MEAN] == pytest.approx(80.0 - (7 * 79.2 + 4 * 86.2 + 8 * 59.7) / 19)
    assert [round(d[group_column(g)], 2) for g in VTAB.groups] == [0.8, -6.2, 20.3]
    assert d[GROUP_MEAN] == pytest.approx(80.0 - (79.2 + 86.2 + 59.7) / 3)


def _board(family: str, model: str) -> Leaderboard:
    """One row of ours, `full` under `tune`, on `model` of `family`."""
    table = pd.DataFrame([{t.name: 70.0 for t in VTAB.tasks}], index=pd.Index(["full"], name="Method"))
    run = {"method": "full", "method_name": "full", "model": model, "family": family, "protocol": "tune"}
    return Leaderboard(VTAB, table, row_runs={"full": run})


def test_a_board_shows_the_published_rows_of_its_backbone_family():
    swin = with_published(_board("swin", "swin_base_patch4_window7_224.ms_in22k"))
    published = [label for label in swin.table.index if "(published" in label]
    assert published == [f"{m} (published, swin_b_in22k, unknown)" for m in
                         ("full", "linear", "bitfit", "vpt_shallow", "vpt_deep", "fact_tt", "convpass")]  # fmt: skip
    assert "full (published, swin_b_in22k, unknown): no delta (full: published row's protocol is not stated)." in (
        swin.notes
    )
    assert any("a row without cells: from its group means as printed" in note for note in swin.notes)
    vit = with_published(_board("vit", ORIG))
    assert not any("swin" in label or "convnext" in label for label in vit.table.index)
    assert "Δ full − published" in vit.table.index  # VPT's full row: same backbone, method and protocol
    assert not any("without cells" in note for note in vit.notes)
    convnext = with_published(_board("convnext", "convnext_base.fb_in22k"))
    assert [label for label in convnext.table.index if "(published" in label] == [
        "full (published, convnext_b_in22k, unknown)",
        "linear (published, convnext_b_in22k, unknown)",
    ]


def test_deltas_reject_unknown_tasks():
    with pytest.raises(PeftbenchError, match="unknown task"):
        deltas({"imagenet": 80.0}, _row(VTAB, "rlrr"), VTAB)
