"""Records for report tests, written as the tests' schema-1 dicts and read through `Record.from_json`.

The dicts leave out what a report does not read; this fills the fields every real record has
(its key, the head and total parameter counts, the split names and sizes, how memory was
measured), so the migration path is the one under test.
"""

from __future__ import annotations

import copy

import pandas as pd

from peftbench.record import Record
from peftbench.reports.leaderboard import runs_frame


def as_records(dicts: list[dict]) -> list[Record]:
    records = []
    for index, raw in enumerate(dicts):
        raw = copy.deepcopy(raw)
        raw.setdefault("key", f"record{index:04d}")
        params = raw.get("params")
        if params:
            params.setdefault("head", params["trainable"] - params["trainable_without_head"])
            params.setdefault("total", params["trainable"])
        if "data" in raw:
            raw["data"] = {
                "train_split": "train800val200",
                "train_size": 1000,
                "eval_split": "test",
                "eval_size": 0,
                **raw["data"],
            }
        if "memory" in raw:
            raw["memory"] = {"measure": "process max RSS", **raw["memory"]}
        records.append(Record.from_json(raw))
    return records


def runs_frame_of(dicts: list[dict]) -> pd.DataFrame:
    """`runs_frame` of the records the dicts describe."""
    return runs_frame(as_records(dicts))
