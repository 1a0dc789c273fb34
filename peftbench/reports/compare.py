"""`peftbench compare A B`: whether two methods' accuracies differ beyond chance, task by task.

From the test predictions each run keeps beside its record (`<record>.predictions.npz`):

- Per task, the examples of every seed both methods ran (seeds pooled: seed s of A is paired with
  seed s of B, example by example). The difference of top-1 (A − B, points) with a 95 % paired
  bootstrap interval over those examples (`scipy.stats.bootstrap(paired=True)`, percentile method,
  `resamples` resamples from `seed`), and the p-value of McNemar's exact test on the discordant pairs
  (`scipy.stats.binomtest`: A right and B wrong against the reverse, p = 1 when there are none).
- Holm's step-down correction over the suite's tasks; a task is a win (loss) when its Holm-corrected
  p < `alpha` and A's top-1 is higher (lower), else a tie.
- The suite means (flat, and mean of group means): every task's bootstrap replicates resampled
  independently and averaged replicate by replicate, so the interval resamples the examples of all
  tasks jointly; its p-value is the bootstrap's two-sided one (twice the share of replicates on the
  far side of 0).

Seeded and deterministic: the same records give the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import PeftbenchError
from ..record import Record
from ..store import Store
from ..suites import Suite, get_suite

CONFIDENCE = 0.95


@dataclass(frozen=True)
class TaskComparison:
    task: str
    examples: int  # paired examples, seeds pooled
    seeds: tuple[int, ...]
    top1_a: float
    top1_b: float
    difference: float  # A − B, points
    low: float
    high: float
    p_value: float
    p_holm: float = float("nan")
    verdict: str = ""  # win | tie | loss (for A)


@dataclass(frozen=True)
class MeanComparison:
    name: str
    difference: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class Comparison:
    suite: str
    a: str
    b: str
    protocol: str
    model: str
    tasks: tuple[TaskComparison, ...]
    means: tuple[MeanComparison, ...]
    alpha: float
    resamples: int
    seed: int

    @property
    def wins_ties_losses(self) -> tuple[int, int, int]:
        verdicts = [t.verdict for t in self.tasks]
        return verdicts.count("win"), verdicts.count("tie"), verdicts.count("loss")


def compare(results: Path, suite_name: str, a: str, b: str, protocol: str | None = None, model: str | None = None,
            resamples: int = 10_000, seed: int = 0, alpha: float = 0.05, intervals: bool = True) -> Comparison:  # fmt: skip
    """A against B on every task of the suite both have runs of (`intervals=False`: the tests and their
    Holm-corrected verdicts only, no bootstrap)."""
    if resamples < 100:
        raise PeftbenchError(f"--resamples must be at least 100, got {resamples}")
    suite, store = get_suite(suite_name), Store(results)
    runs = [r for r in store.records(suite.name) if r.ok and r.kind != "trial" and r.spec.method in (a, b)]
    protocol, model = _one(runs, "protocol", protocol, a, b), _one(runs, "model", model, a, b)
    runs = [r for r in runs if r.spec.protocol == protocol and r.spec.model == model]
    rng = np.random.default_rng(seed)
    compared, replicates = [], {}
    for task in suite.tasks:
        by_seed = {m: {r.spec.seed: r for r in runs if r.spec.method == m and r.spec.task == task.name} for m in (a, b)}
        seeds = tuple(sorted(set(by_seed[a]) & set(by_seed[b])))
        if not seeds:
            continue
        right_a, right_b = _paired_correct(store, by_seed[a], by_seed[b], seeds, task.name)
        comparison, replicates[task.name] = _task(
            task.name, seeds, right_a, right_b, resamples if intervals else 0, rng
        )
        compared.append(comparison)
    if not compared:
        raise PeftbenchError(f"no task of {suite.name} has runs of both {a} and {b} with a common seed under {results}")
    tasks = _holm(compared, alpha)
    means = _means(suite, tasks, replicates) if intervals else ()
    return Comparison(suite.name, a, b, protocol, model, tuple(tasks), means, alpha, resamples, seed)


def _one(runs: list[Record], field: str, chosen: str | None, a: str, b: str) -> str:
    """The protocol (or model) both methods ran under: the one asked for, or the only one there is."""
    values = sorted({getattr(r.spec, field) for r in runs})
    if chosen is not None:
        if chosen not in values:
            raise PeftbenchError(f"no runs of {a} or {b} with {field} '{chosen}'; found: {', '.join(values) or 'none'}")
        return chosen
    if len(values) != 1:
        found = ", ".join(values) if values else f"no finished runs of {a} or {b}"
        raise PeftbenchError(f"choose one {field} with --{field} ({found})")
    return values[0]


def _paired_correct(store: Store, a: dict[int, Record], b: dict[int, Record], seeds, task: str):
    right_a, right_b = [], []
    for s in seeds:
        (predicted_a, labels_a), (predicted_b, labels_b) = store.predictions(a[s]), store.predictions(b[s])
        if not np.array_equal(labels_a, labels_b):
            raise PeftbenchError(f"{task}, seed {s}: the two runs were evaluated on different examples")
        right_a.append(predicted_a == labels_a)
        right_b.append(predicted_b == labels_b)
    return np.concatenate(right_a), np.concatenate(right_b)


def _task(
    task: str, seeds, right_a: np.ndarray, right_b: np.ndarray, resamples: int, rng
) -> tuple[TaskComparison, np.ndarray]:
    from scipy import stats

    a, b = right_a.astype(float), right_b.astype(float)
    difference = 100 * (a.mean() - b.mean())
    if not resamples:  # no intervals asked for
        replicates, low, high = np.zeros(0), float("nan"), float("nan")
    elif np.array_equal(a, b):  # every resample is 0: scipy would warn of a degenerate distribution
        replicates = np.zeros(resamples)
        low = high = 0.0
    else:
        result = stats.bootstrap((a, b), lambda x, y, axis: 100 * (x.mean(axis) - y.mean(axis)), paired=True,
                                 vectorized=True, n_resamples=resamples, confidence_level=CONFIDENCE,
                                 method="percentile", rng=rng, batch=500)  # fmt: skip
        replicates = result.bootstrap_distribution
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p_value = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    top1_a, top1_b = 100 * a.mean(), 100 * b.mean()
    return TaskComparison(task, len(a), tuple(seeds), top1_a, top1_b, difference, low, high, p_value), replicates


def _holm(tasks: list[TaskComparison], alpha: float) -> list[TaskComparison]:
    """Holm's step-down adjusted p-values (monotone, capped at 1) and each task's verdict."""
    order = sorted(range(len(tasks)), key=lambda i: tasks[i].p_value)
    adjusted, running = [0.0] * len(tasks), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(tasks) - rank) * tasks[index].p_value))
        adjusted[index] = running
    out = []
    for task, p in zip(tasks, adjusted):
        verdict = "tie" if p >= alpha or task.difference == 0 else "win" if task.difference > 0 else "loss"
        out.append(TaskComparison(**{**asdict(task), "p_holm": p, "verdict": verdict, "seeds": task.seeds}))
    return out


def _means(suite: Suite, tasks: list[TaskComparison], replicates: dict[str, np.ndarray]) -> tuple[MeanComparison, ...]:
    """The flat mean (one part: every task) and, with every task there, the mean of group means (a part
    per group): the point from the tasks' differences, the interval and p from their replicates."""
    names = [t.task for t in tasks]
    definitions = [("Mean (flat)", [names])]
    if len(names) == len(suite.tasks) and len(suite.groups) > 1:
        definitions.append(
            ("Mean of group means", [[t.name for t in suite.tasks if t.group == g] for g in suite.groups])
        )
    out = []
    for title, parts in definitions:
        point = np.mean([np.mean([_difference(tasks, n) for n in part]) for part in parts])
        draws = np.mean([np.mean([replicates[n] for n in part], axis=0) for part in parts], axis=0)
        low, high = np.percentile(draws, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
        far = min((draws <= 0).mean(), (draws >= 0).mean())
        out.append(MeanComparison(title, float(point), float(low), float(high), float(min(1.0, 2 * far))))
    return tuple(out)


def _difference(tasks: list[TaskComparison], name: str) -> float:
    return next(t.difference for t in tasks if t.task == name)


def render(comparison: Comparison, fmt: str = "md") -> str:
    if fmt == "json":
        payload = {**asdict(comparison), "wins_ties_losses": comparison.wins_ties_losses}
        return json.dumps(payload, indent=2) + "\n"
    c = comparison
    lines = [
        f"## {c.a} vs {c.b}: {c.suite} ({c.protocol}, {c.model})",
        "",
        f"| Task | Examples | Seeds | {c.a} | {c.b} | Δ (A − B) | 95 % CI | p | p (Holm) | |",
        "|:--|--:|:--|--:|--:|--:|:--|--:|--:|:--|",
    ]
    for t in c.tasks:
        mark = {"win": "▲", "loss": "▼", "tie": ""}[t.verdict]
        lines.append(f"| {t.task} | {t.examples:,} | {','.join(map(str, t.seeds))} | {t.top1_a:.1f} | {t.top1_b:.1f} | "
                     f"{t.difference:+.2f} | [{t.low:+.2f}, {t.high:+.2f}] | {t.p_value:.3g} | {t.p_holm:.3g} | {mark} |")  # fmt: skip
    for m in c.means:  # a bootstrap p of 0: no replicate on the far side of 0
        shown = f"< {1 / c.resamples:.0e}" if m.p_value == 0 else f"{m.p_value:.3g}"
        lines.append(f"| **{m.name}** | | | | | {m.difference:+.2f} | [{m.low:+.2f}, {m.high:+.2f}] | {shown} | | |")
    wins, ties, losses = c.wins_ties_losses
    lines += [
        "",
        f"- {c.a} against {c.b}: {wins} wins, {ties} ties, {losses} losses (▲ / ▼: Holm-corrected p < {c.alpha:g}).",
        f"- Δ: top-1 points; CI: {CONFIDENCE:.0%} paired bootstrap over the test examples (seeds pooled), "
        f"percentile, {c.resamples:,} resamples, seed {c.seed}; p: McNemar's exact test on the discordant "
        "examples; suite means: the tasks' bootstrap replicates averaged (examples of all tasks resampled "
        "jointly), two-sided bootstrap p.",
    ]
    return "\n".join(lines) + "\n"
