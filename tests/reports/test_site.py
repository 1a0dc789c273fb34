"""`peftbench site`: leaderboards per suite × protocol × backbone, method and task pages with intervals,
provenance, every record string escaped, nothing fetched from the network; sorting in headless Chromium."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import browser
import numpy as np
import pytest
from record_factory import put_predicted
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.reports.faithfulness import read_faithfulness
from peftbench.reports.site import build_site
from peftbench.reports.site_data import MethodCard
from peftbench.store import Store

N = 500
LABELS = np.arange(N) % 5
HOSTILE = "<script>alert('x')</script>"
REPO = Path(__file__).resolve().parents[2]


def wrong_on(count: int) -> np.ndarray:
    return np.where(np.arange(N) < count, (LABELS + 1) % 5, LABELS)


def sweep(root: Path) -> Store:
    """Three methods on the four demo tasks (two seeds), one of them on a second backbone, and a failed run."""
    store = Store(root)
    for seed in (1, 2):
        for method, wrong in (("lora", 0), ("vpt_deep", 100), ("linear", 200)):
            put_predicted(store, method, "count", seed, wrong_on(wrong), LABELS)
            for task in ("textures", "landcover", "position"):
                put_predicted(store, method, task, seed, wrong_on(wrong // 2 + seed), LABELS)
    put_predicted(store, "linear", "count", 1, wrong_on(50), LABELS, model="deit_micro_distilled_patch4_32")
    failed = put_predicted(store, "lora", "position", 3, LABELS, LABELS)
    store.put(dataclasses.replace(failed, status="failed", metrics=None, predictions=None, reason=f"bad {HOSTILE}"))
    return store


def pages(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in out.rglob("*.html")}


def test_the_site_has_a_leaderboard_per_backbone_and_pages_with_intervals(tmp_path: Path):
    sweep(tmp_path / "results")
    cards = [
        MethodCard("lora", "LoRA on q and v", "Hu et al. 2022, Eq. 3", ("vit",), True, (("rank", "int", "8", "r"),))
    ]
    written = build_site(tmp_path / "results", tmp_path / "site", cards)
    site = pages(tmp_path / "site")
    assert set(site) == {str(p.relative_to(tmp_path / "site")) for p in written}
    assert {"index.html", "provenance.html", "methods/lora.html", "methods/linear.html", "methods/vpt_deep.html",
            "tasks/demo-count.html", "tasks/demo-textures.html"} <= set(site)  # fmt: skip
    index = site["index.html"]
    assert index.count('<section id="demo-default-') == 2  # vit_micro and deit_micro
    assert "Mean (flat): mean over the 4 tasks." in index and "Params (M) incl. head" in index
    for plot in ("pareto", "cd"):
        assert f'src="plots/demo-default-vit_micro_patch4_32-random-init-{plot}.svg"' in index
        assert (tmp_path / "site" / "plots" / f"demo-default-vit_micro_patch4_32-random-init-{plot}.svg").is_file()
    assert "not drawn, a critical-difference diagram needs 3 or more rows" in index  # deit_micro: one row
    lora = site["methods/lora.html"]
    assert "LoRA on q and v" in lora and "Hu et al. 2022, Eq. 3" in lora and "<td" in lora
    count_row = re.search(r'<a href="../tasks/demo-count.html">count</a>.*?</tr>', lora).group(0)
    assert "100.0" in count_row and "[100.0, 100.0]" in count_row and ">2<" in count_row  # two seeds
    linear = site["methods/linear.html"]
    deit, vit = linear.split("<h3>")[1:]  # one results table per backbone, deit_micro's first
    assert "deit_micro_distilled_patch4_32" in deit and "vit_micro_patch4_32" in vit
    row = re.search(r'<a href="../tasks/demo-count.html">count</a>.*?</tr>', vit).group(0)
    low, high = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", row).groups())
    assert 55 < low < 60 < high < 65  # 60 % of 500 examples right, the same ones in both seeds
    assert "FAITHFULNESS.md" in linear  # no table given: the page says so
    task = site["tasks/demo-count.html"]
    assert all(f'methods/{m}.html">{m}</a>' in task for m in ("lora", "vpt_deep", "linear"))
    provenance = site["provenance.html"]
    assert provenance.count("<tr>") == 1 + 26  # header + every record, the failed one included
    assert "bad &lt;script&gt;" in provenance


def test_every_record_string_is_escaped_and_nothing_is_fetched(tmp_path: Path):
    store = sweep(tmp_path / "results")
    record = next(r for r in store.records() if r.spec.method == "lora" and r.status == "ok")
    hostile = dataclasses.replace(
        record,
        adapted={"label": HOSTILE},
        provenance=dataclasses.replace(record.provenance, device='"><img src=x onerror=alert(1)>'),
    )
    store.put(hostile)
    build_site(tmp_path / "results", tmp_path / "site")
    for name, text in pages(tmp_path / "site").items():
        assert HOSTILE not in text and "<img src=x" not in text, name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name  # nothing from the network
    index = (tmp_path / "site" / "index.html").read_text()
    assert "lora (&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;)" in index
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in index
    for asset in (tmp_path / "site" / "assets").iterdir():
        assert "http" not in asset.read_text() and "@import" not in asset.read_text()


def test_the_site_command_reads_faithfulness_and_refuses_bad_input(tmp_path: Path, monkeypatch):
    sweep(tmp_path / "results")
    (tmp_path / "FAITHFULNESS.md").write_text(
        "# Faithfulness\n\n| method | repository @ commit | module | `paper` recipe | command |\n|:--|:--|:--|:--|:--|\n"
        "| `lora`, `linear` | huggingface/peft 0.21.2 | faithful (logits 0) | no recipe | `python tools/x.py` |\n"
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    built = runner.invoke(app, ["site", "--results", "results", "--out", "site"])
    assert built.exit_code == 0, built.output
    assert "pages to site" in built.output
    lora = (tmp_path / "site" / "methods" / "lora.html").read_text()
    assert "huggingface/peft 0.21.2" in lora and "<code>python tools/x.py</code>" in lora
    assert "RLRR" in (tmp_path / "site" / "methods" / "rlrr.html").read_text()  # every registered method has a page
    missing = runner.invoke(app, ["site", "--results", "nowhere", "--out", "site"])
    assert missing.exit_code != 0 and "results folder nowhere does not exist" in missing.output
    (tmp_path / "bad.md").write_text("# no table\n")
    bad = runner.invoke(app, ["site", "--results", "results", "--faithfulness", "bad.md"])
    assert bad.exit_code != 0 and "bad.md: no summary table headed" in bad.output
    assert "Traceback" not in missing.output + bad.output


def test_faithfulness_md_has_a_row_for_every_method_with_released_code():
    rows = read_faithfulness(REPO / "FAITHFULNESS.md")
    assert set(rows) == {"adapter", "lora_qkv", "noah", "vpt_shallow", "vpt_deep", "adaptformer", "lora", "fact_tt",
                         "fact_tk", "convpass", "adapter_plus", "repadapter", "ln_tune", "difffit", "adapter_houlsby",
                         "adapter_pfeiffer", "ssf", "rlrr"}  # fmt: skip
    assert [r.repository.split(" @ ")[0] for r in rows["rlrr"]] == ["zstarN70/RLRR"] * 2  # ViT and Swin


BOARD = "section#demo-default-vit_micro_patch4_32-random-init table.sortable"  # the three-row leaderboard


def _row_order(page) -> list[str]:
    return page.evaluate(f"Array.from(document.querySelector('{BOARD} tbody').rows).map(r => r.cells[0].textContent)")


@pytest.mark.skipif(
    not browser.available(),
    reason=f"no Chromium at {browser.CHROMIUM}: install Debian's chromium (.ci/run does: apt-get install chromium)",
)
def test_chromium_sorts_a_leaderboard_on_a_click_and_renders_the_pages(tmp_path: Path):
    sweep(tmp_path / "results")
    build_site(tmp_path / "results", tmp_path / "site", [MethodCard("lora", "LoRA on q and v")])
    with browser.Browser() as chromium:
        index = chromium.open((tmp_path / "site" / "index.html").as_uri())
        assert index.evaluate("document.querySelectorAll('table.sortable').length") >= 4  # 2 boards + efficiency
        headers = index.evaluate(
            f"Array.from(document.querySelector('{BOARD}').tHead.rows[1].cells).map(c => c.textContent)"
        )
        count = headers.index("count")
        index.click(f"{BOARD} thead th[data-column='0']")
        assert _row_order(index) == ["linear", "lora", "vpt_deep"]  # text: alphabetical
        index.click(f"{BOARD} thead th[data-column='{count}']")
        assert _row_order(index) == ["lora", "vpt_deep", "linear"]  # numbers: highest first
        sorted_by = index.evaluate(
            f"document.querySelector(\"{BOARD} th[data-column='{count}']\").getAttribute('aria-sort')"
        )
        assert sorted_by == "descending"
        index.click(f"{BOARD} thead th[data-column='{count}']")
        assert _row_order(index) == ["linear", "vpt_deep", "lora"]
        index.screenshot(tmp_path / "index.png")
        method = chromium.open((tmp_path / "site" / "methods" / "lora.html").as_uri())
        assert method.evaluate("document.styleSheets.length") == 1  # the stylesheet loaded from assets/
        assert "LoRA on q and v" in method.evaluate("document.body.innerText")
        method.screenshot(tmp_path / "lora.png")
    for shot in ("index.png", "lora.png"):
        png = (tmp_path / shot).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_a_leaderboard_shows_the_published_rows_of_its_backbone_family(tmp_path: Path):
    store = Store(tmp_path / "results")
    for task in ("food101_shot1_seed0", "fgvc_aircraft_shot16_seed2"):
        put_predicted(store, "adapter", task, 1, wrong_on(100), LABELS, suite="fewshot_fgvc",
                      model="vit_base_patch16_224.orig_in21k")  # fmt: skip
    sweep(tmp_path / "results")  # and a demo board, whose suite has no published rows
    build_site(tmp_path / "results", tmp_path / "site", [])
    index = pages(tmp_path / "site")["index.html"]
    fewshot, demo = index.split('<section id="fewshot_fgvc')[1], index.split('<section id="fewshot_fgvc')[0]
    assert fewshot.count("Published rows of this backbone family") == 1 and "Published rows" not in demo
    noah = re.search(r'<th class="text" data-value="noah">noah</th>.*?</tr>', fewshot).group(0)
    assert ">39.8<" in noah and ">76.5<" in noah and ">58.7<" in noah  # 1-shot, 16-shot, both suite means
    assert "FacT paper Figure 6" in noah and ">0.355<" in noah and ">unknown<" in noah
