"""What every faithfulness script shares: the authors' checkout on sys.path, peftbench's paper
settings, comparisons, and the Markdown rows of FAITHFULNESS.md."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from peftbench.methods import get_method
from peftbench.settings import TrainConfig, resolve
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published


def parse_args(description: str, clone: str, commit: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help=f"a checkout of the authors' code: git clone {clone} && git -C <dir> checkout {commit}",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown section to this file")
    args = parser.parse_args()
    args.command = "python " + " ".join(
        [sys.argv[0], "--source", "<checkout>"] + (["--out", str(args.out)] if args.out else [])
    )
    if not args.source.is_dir():
        sys.exit(
            f"--source {args.source} is not a folder; get it with: git clone {clone} && git -C <dir> checkout {commit}"
        )
    sys.path.insert(0, str(args.source.resolve()))
    return args


def source_commit(source: Path) -> str:
    """The checkout's commit (or 'unknown' for an exported tree)."""
    try:
        return subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_link(clone: str, pinned: str, commit: str) -> str:
    """The checkout as a report names it: `[owner/repo](url)@short commit` (the pinned one for an exported tree)."""
    return f"[{clone.removeprefix('https://github.com/')}]({clone})@{(commit if commit != 'unknown' else pinned)[:7]}"


def agreement(differ: list, total: int) -> str:
    """`matched/total`, naming the items that differ."""
    return f"{total - len(differ)}/{total}" + (f" (differ: {differ})" if differ else "")


def paper_config(method: str, suite: str, task: str, **changes) -> TrainConfig:
    """The TrainConfig `peftbench run --protocol paper` resolves for `method` on `task`."""
    chosen = get_suite(suite)
    found = published(method, chosen, chosen.task(task))
    train, _ = resolve(get_method(method), chosen.defaults, {**found.settings, **changes})
    return train


def vit_config(width: int, depth: int, heads: int, patch: int, dropout: float):
    """A small ViT in the ml_collections layout of jeonsworld/ViT-pytorch, which RLRR's and VPT's code read."""
    import ml_collections

    config = ml_collections.ConfigDict()
    config.patches = ml_collections.ConfigDict({"size": (patch, patch)})
    config.hidden_size = width
    config.transformer = ml_collections.ConfigDict({"mlp_dim": 2 * width, "num_heads": heads, "num_layers": depth,
                                                    "attention_dropout_rate": 0.0, "dropout_rate": dropout})  # fmt: skip
    config.classifier, config.representation_size = "token", None
    return config


def parity_inputs(image: int) -> torch.Tensor:
    """The fp64 batch every module comparison feeds both models."""
    return torch.randn(4, 3, image, image, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def logits_then_backward(report: Report, ours, theirs, image: int, prefix: str = "") -> torch.Tensor:
    """Compare both models' fp64 logits on `parity_inputs` (a report row), then backpropagate the same
    cross-entropy through each; returns the inputs."""
    x, y = parity_inputs(image), torch.tensor([0, 3, 5, 9])
    difference = max_abs(ours(x), theirs(x))
    report.check(f"{prefix}logits, fp64, max abs difference", difference, "1e-10", difference <= 1e-10)
    for model in (ours, theirs):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return x


@torch.no_grad()
def share_values(triples) -> None:
    """For (name, ours, theirs) triples: perturb our trainable tensors (no check may pass on an init of
    zeros), then copy every tensor of ours into theirs, viewed in their shape."""
    generator = torch.Generator().manual_seed(7)
    for _, mine, their in triples:
        if mine.requires_grad:
            mine.add_(torch.randn(mine.shape, generator=generator) * 0.05)
        their.copy_(mine.view_as(their))


def same_masks_difference(run_ours, run_theirs) -> float:
    """Max abs difference of two training-mode forwards, each run from the same torch seed, so their
    dropout and drop-path masks are the same draws when the modules consume them in the same order."""
    torch.manual_seed(123)
    mine = run_ours()
    torch.manual_seed(123)
    return max_abs(mine, run_theirs())


def compare_inits(report: "Report", groups: dict[str, tuple[list, list]], prefix: str = "") -> None:
    """One row per group of (our, their) initial tensors: zero on both sides, or a two-sample KS p-value."""
    from scipy import stats

    for what, (a, b) in sorted(groups.items()):
        a, b = torch.cat(a), torch.cat(b)
        if not a.any() and not b.any():
            report.check(f"{prefix}init of the {what}: zero on both sides", "0 / 0", "equal", True)
            continue
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"{prefix}init of the {what} ({a.numel():,} values): two-sample KS p-value", float(p_value),
                     "> 0.01", p_value > 0.01)  # fmt: skip


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def max_relative(ours: list[float], theirs: list[float]) -> float:
    if len(ours) != len(theirs):
        return float("inf")
    return max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, theirs))


@dataclass
class Report:
    """The rows of one method's section: check, figure, bound, verdict."""

    title: str
    source: str
    files: str
    rows: list[tuple[str, str, str, bool | None]] = field(default_factory=list)

    def check(self, what: str, figure: float | str, bound: float | str, ok: bool | None) -> None:
        """One row; `ok=None` reports a figure without a verdict (it has no bound that means faithful)."""
        shown = f"{figure:.3g}" if isinstance(figure, float) else str(figure)
        self.rows.append((what, shown, str(bound), None if ok is None else bool(ok)))
        print(f"{'info' if ok is None else 'ok  ' if ok else 'FAIL'} {what}: {shown} (bound {bound})", flush=True)

    @property
    def faithful(self) -> bool:
        return all(ok is not False for *_, ok in self.rows)

    def markdown(self, command: str) -> str:
        lines = [
            f"## {self.title}",
            "",
            f"- Source: {self.source}",
            f"- Files: {self.files}",
            f"- Command: `{command}`",
            f"- Machine: {machine()}",
            f"- Verdict: **{'faithful' if self.faithful else 'NOT faithful'}**",
            "",
            "| check | figure | bound | verdict |",
            "|:--|--:|--:|:--|",
        ]
        verdicts = {True: "faithful", False: "differs", None: "reported"}
        lines += [f"| {what} | {figure} | {bound} | {verdicts[ok]} |" for what, figure, bound, ok in self.rows]
        return "\n".join(lines) + "\n"


def machine() -> str:
    import platform

    import PIL
    import timm

    from peftbench.provenance import cpu_model

    return (
        f"{cpu_model()}, {torch.get_num_threads()} threads; python {platform.python_version()}, torch "
        f"{torch.__version__}, timm {timm.__version__}, Pillow {PIL.__version__}"
    )


def finish(report: Report, args: argparse.Namespace) -> None:
    text = report.markdown(args.command)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    sys.exit(0 if report.faithful else 1)


def script_scheduler_lrs(script: Path, lr: float) -> list[float]:
    """The lr of every epoch of a JieShibo/PETL-ViT-style script (FacT, Convpass, RepAdapter): its `CosineLRScheduler(opt, ...)`
    call, arguments read from the file, stepped `scheduler.step(ep)` after each of its `epoch=` epochs."""
    import re

    from timm.scheduler.cosine_lr import CosineLRScheduler

    text = script.read_text()
    call = re.search(r"CosineLRScheduler\(opt,([^)]*)\)", text).group(1)
    kwargs = {k.strip(): float(v) for k, v in (part.split("=") for part in call.replace("\n", "").split(","))}
    kwargs = {k: int(v) if k in ("t_initial", "warmup_t") else v for k, v in kwargs.items()}
    kwargs["cycle_decay"] = kwargs.pop("decay_rate", 1.0)  # timm 0.4's name; one cycle, so it changes nothing
    epochs = int(re.search(r"scheduler, epoch=(\d+)[,)]", text).group(1))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, lrs = CosineLRScheduler(optimizer, **kwargs), []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    return lrs
