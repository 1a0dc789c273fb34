"""RunSpec: everything that changes a run's result, typed, and its stable key.

The key is the first 16 hex digits of the sha256 of the spec's *flat form*, the JSON every record
stores under `spec`: the spec's fields with the engine settings, the method's options and the
protocol's own settings in one `settings` object. That form is the one peftbench has hashed since
its first record, so every results folder ever written resumes.

Settings added later must not change the key of a run they do not change. The rule (no key
versions, no migration of keys): a `TrainConfig` field added after the first release declares
`metadata={"key_neutral": value}`, the value that reproduces the behaviour from before it existed.
The flat form leaves the field out while it holds that value, so old keys stand, and reading a flat
form without it gives that value back. Fields present from the start have no `key_neutral`: they
are always hashed, and a flat form without them (the first records) reads back their defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .errors import PeftbenchError
from .settings import TrainConfig

PROTOCOLS = ("default", "paper", "tune", "best-test")
# Settings that the best-test protocol adds to its runs' flat form (they are not engine settings).
BEST_TEST_SETTINGS = ("eval_every", "settings_source")
KEY_NEUTRAL = "key_neutral"


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise PeftbenchError(f"unknown protocol '{name}'; valid protocols: {', '.join(PROTOCOLS)}")
    return name


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a method trained on one task with one seed and fixed settings."""

    suite: str
    task: str
    method: str
    model: str
    weights: str  # sha256 of the weights file, "timm:<id>", or "random init"
    seed: int
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the method's options
    protocol: str = "default"
    train_split: str = "train800val200"
    eval_split: str = "test"
    recipe: str = "vtab-resize"  # preprocessing (peftbench.data.recipes)
    eval_every: int = 0  # best-test: evaluate the test split every k epochs (0: only after the last)
    settings_source: str = ""  # best-test: "paper" or "default", where the settings came from
    resize_filter: str = "bicubic"  # the recipe's PIL filter (a spec field so that changing it changes the key)
    data_layout: str = ""  # the data's layout when not the suite's own ("tfds", "hf"): converted data is other data

    @property
    def key(self) -> str:
        """A hash of the flat form: equal specs share a key, any change gives a new one."""
        canonical = json.dumps(self.flat(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def settings(self) -> dict[str, Any]:
        """Engine settings, method options and the protocol's settings in one mapping (the flat form's)."""
        merged = {**flat_train_settings(self.train), **self.options}
        if self.protocol == "best-test":
            merged.update(eval_every=self.eval_every, settings_source=self.settings_source)
        return merged

    def flat(self) -> dict[str, Any]:
        """The JSON form records store and the key hashes (`resize_filter` only when not bicubic, which
        every recipe used before the field existed; `data_layout` only when not the suite's own)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _TYPED}
        if self.resize_filter == "bicubic":
            del fields["resize_filter"]
        if not self.data_layout:
            del fields["data_layout"]
        return {**fields, "settings": self.settings}

    def flat_without_task(self) -> dict[str, Any]:
        """The flat form without the task and its evaluated split: equal for runs that train the same
        model when their tasks share one training split (domain generalisation's test sets)."""
        return {k: v for k, v in self.flat().items() if k not in ("task", "eval_split")}

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> RunSpec:
        """The spec of a flat form, of any record peftbench has written."""
        try:
            settings = dict(flat["settings"])
            own = {f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat and f.name not in _TYPED}
        except (KeyError, TypeError) as exc:
            raise PeftbenchError(f"a run spec needs its fields and a settings object; missing {exc}") from None
        train_names = {f.name for f in dataclasses.fields(TrainConfig)}
        train = TrainConfig(**{k: v for k, v in settings.items() if k in train_names}, **_absent_neutral(settings))
        extras = {k: settings[k] for k in BEST_TEST_SETTINGS if k in settings}
        options = {k: v for k, v in settings.items() if k not in train_names and k not in BEST_TEST_SETTINGS}
        return cls(**own, **extras, train=train, options=options)

    def with_settings(self, values: dict[str, Any]) -> RunSpec:
        """This spec with some engine settings or method options replaced (a tune point)."""
        train_names = {f.name for f in dataclasses.fields(TrainConfig)}
        train = dataclasses.replace(self.train, **{k: v for k, v in values.items() if k in train_names})
        options = {**self.options, **{k: v for k, v in values.items() if k not in train_names}}
        return dataclasses.replace(self, train=train, options=options)

    def label(self) -> str:
        return f"{self.suite}/{self.task} {self.method} seed {self.seed}"


_TYPED = ("train", "options", "eval_every", "settings_source")  # held in the flat form's `settings`


def flat_train_settings(train: TrainConfig) -> dict[str, Any]:
    """The engine settings as the flat form holds them: a later field at its key-neutral value is left out."""
    flat = {}
    for field in dataclasses.fields(train):
        value = getattr(train, field.name)
        if KEY_NEUTRAL in field.metadata and value == field.metadata[KEY_NEUTRAL]:
            continue
        flat[field.name] = value
    return flat


def _absent_neutral(settings: dict[str, Any]) -> dict[str, Any]:
    """The key-neutral values of later fields that a flat form leaves out."""
    return {
        f.name: f.metadata[KEY_NEUTRAL]
        for f in dataclasses.fields(TrainConfig)
        if KEY_NEUTRAL in f.metadata and f.name not in settings
    }
