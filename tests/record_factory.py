"""Records for report tests, written as the tests' schema-1 dicts and read through `Record.from_json`.

The dicts leave out what a report does not read; this fills the fields every real record has
(its key, the head and total parameter counts, the split names and sizes, how memory was
measured), so the migration path is the one under test.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd

from peftbench.record import Execution, Metrics, Params, Predictions, Provenance, Record
from peftbench.reports.leaderboard import runs_frame
from peftbench.settings import TrainConfig
from peftbench.spec import RunSpec
from peftbench.store import Store


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


def put_predicted(store: Store, method: str, task: str, seed: int, predicted, labels, **changes) -> Record:
    """A finished demo-suite record whose test predictions are `predicted` (top-1 follows from them),
    written through `store` with its sidecar; `changes` replace the spec's fields (model, protocol, ...)."""
    spec = RunSpec(
        "demo", task, method, "vit_micro_patch4_32", "random init", seed, TrainConfig(epochs=1, warmup_epochs=0), {}
    )
    spec = dataclasses.replace(spec, **changes)
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    record = Record(spec.key, "run", spec, "ok", metrics=Metrics(100 * float(np.mean(predicted == labels))),
                    params=Params(10, 5, 5, 100), execution=Execution(), provenance=Provenance(finished_at=f"2026-01-01T00:00:{seed % 60:02d}"),
                    predictions=Predictions("test", len(labels), arrays=(predicted, labels)))  # fmt: skip
    store.put(record)
    return record
