"""`report --significance BASELINE`: which cells differ significantly from the baseline row.

For every row of ours under the baseline's backbone and protocol, `compare.compare` against the
baseline without intervals: per task McNemar's exact test on the paired test examples (seeds pooled),
Holm's correction over the suite's tasks; a cell is marked ▲ (better) or ▼ (worse) when its corrected
p is below `alpha`. Rows that cannot be compared (another backbone or protocol, records without
predictions) get a note saying why.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import PeftbenchError
from .compare import compare
from .leaderboard import Leaderboard

MARKS = {"win": "▲", "loss": "▼"}


def with_significance(board: Leaderboard, results: Path, baseline: str, alpha: float = 0.05) -> Leaderboard:
    rows = board.row_runs
    base = next((label for label, run in rows.items() if _method(label) == baseline), None)
    if base is None:
        raise PeftbenchError(f"--significance {baseline}: no such row in {board.suite.name}; rows: {', '.join(rows)}")
    marks, notes = dict(board.marks), list(board.notes)
    for label, run in rows.items():
        if label == base:
            continue
        if (run["model"], run["protocol"]) != (rows[base]["model"], rows[base]["protocol"]):
            notes.append(f"{label}: not tested against {base} (another backbone or protocol).")
            continue
        try:
            result = compare(results, board.suite.name, _method(label), baseline, run["protocol"], run["model"],
                             alpha=alpha, intervals=False)  # fmt: skip
        except PeftbenchError as exc:
            notes.append(f"{label}: not tested against {base} ({exc}).")
            continue
        marks.update({(label, t.task): MARKS[t.verdict] for t in result.tasks if t.verdict in MARKS})
    notes.append(f"▲ / ▼: significantly better / worse than {base} on that task (McNemar's exact test on the paired "
                 f"test examples, seeds pooled; Holm-corrected over the suite's tasks, p < {alpha:g}; peftbench compare).")  # fmt: skip
    return dataclasses.replace(board, marks=marks, notes=notes)


def _method(label: str) -> str:
    """The method name of a row label (a peft row's label adds its tuner and size in parentheses)."""
    return label.split(" (")[0]
