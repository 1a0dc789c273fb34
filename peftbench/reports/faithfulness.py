"""The summary table of FAITHFULNESS.md (one row per method and released codebase), by method.

The table is the first Markdown table of the file, headed `| method | repository @ commit | module |
`paper` recipe | command |`; its first cell names the methods in backticks (`` `adapter`, `lora_qkv` ``),
and a method may have several rows (e.g. RLRR on ViT and on Swin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PeftbenchError

COLUMNS = ("method", "repository @ commit", "module", "`paper` recipe", "command")


@dataclass(frozen=True)
class FaithfulnessRow:
    methods: str  # the first cell as written, e.g. "`rlrr` on Swin, `ssf` on Swin and ConvNeXt"
    repository: str
    module: str
    recipe: str
    command: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_faithfulness(path: Path) -> dict[str, list[FaithfulnessRow]]:
    """method name -> its rows in the summary table of `path`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PeftbenchError(f"cannot read the faithfulness table {path}: {exc.strerror or exc}") from None
    start = next((i for i, line in enumerate(lines) if tuple(_cells(line)) == COLUMNS), None)
    if start is None:
        raise PeftbenchError(f"{path}: no summary table headed '| {' | '.join(COLUMNS)} |'")
    by_method: dict[str, list[FaithfulnessRow]] = {}
    for number, line in enumerate(lines[start + 2 :], start=start + 3):
        if not line.startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != len(COLUMNS):
            raise PeftbenchError(f"{path}:{number}: expected {len(COLUMNS)} cells, got {len(cells)}")
        row = FaithfulnessRow(*cells)
        for method in row.methods.split("`")[1::2]:
            by_method.setdefault(method, []).append(row)
    return by_method
