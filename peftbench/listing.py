"""What peftbench knows, as rows for `peftbench list` and the text of `peftbench describe`."""

from __future__ import annotations

import inspect

from .anatomy import FAMILY_NAMES
from .data.recipes import RECIPES
from .methods import all_methods, get_method
from .params import count_trainable
from .suites import Suite, all_suites, get_suite

Rows = tuple[list[str], list[list[str]], str | None]  # headers, rows, caption


def _suites(name: str | None) -> list[Suite]:
    return [get_suite(name)] if name else list(all_suites().values())


def methods(_: str | None = None) -> Rows:
    rows = [
        [name, ", ".join(cls.families), "yes" if cls.mergeable else "no", ", ".join(cls.option_fields()) or "–",
         cls.summary]
        for name, cls in all_methods().items()
    ]  # fmt: skip
    return (
        ["method", "families", "mergeable", "options", "summary"],
        rows,
        "peftbench describe METHOD: paper, options, trainable set; families: "
        + "; ".join(f"{name} = {what}" for name, what in FAMILY_NAMES.items()),
    )


def recipes(_: str | None = None) -> Rows:
    rows = [
        [
            r.name,
            r.resize,
            f"{r.scale:.4g}",
            "yes" if r.crop else "no",
            "yes" if r.hflip else "no",
            str(r.mean_std) if r.mean_std else "backbone's",
        ]
        for r in RECIPES.values()
    ]
    return ["recipe", "resize", "scale", "crop", "hflip", "mean/std"], rows, None


def suites(suite: str | None = None) -> Rows:
    rows = [[s.name, ", ".join(s.aliases), str(len(s.tasks)), s.layout, s.model, s.description] for s in _suites(suite)]
    return ["suite", "aliases", "tasks", "layout", "backbone", "description"], rows, None


def tasks(suite: str | None = None) -> Rows:
    chosen = _suites(suite)
    layouts = {"/".join(t.splits) for s in chosen for t in s.tasks}
    rows = [
        [s.name, t.name, ", ".join(t.aliases), t.group, str(t.num_classes), "/".join(str(v) for v in t.splits.values())]
        for s in chosen
        for t in s.tasks
    ]
    return (
        ["suite", "task", "aliases", "group", "classes", "split sizes"],
        rows,
        "split sizes: " + "; ".join(sorted(layouts)),
    )


LISTINGS = {"methods": methods, "recipes": recipes, "suites": suites, "tasks": tasks}


def describe_method(name: str, model: str = "vit_base_patch16_224") -> str:
    """Summary, the method's cited docstring (paper, equation, init, trainable set, merge), its options
    with defaults and help, the engine settings it changes, and its exact trainable count on `model`."""
    cls = get_method(name)
    count = count_trainable(name, model, get_suite("vtab1k"), {})
    lines = [f"# {name}: {cls.summary}", "", inspect.cleandoc(cls.__doc__ or ""), "", "Options (--set name=value):"]
    lines += [
        f"  {option} ({kind}, default {default!r}): {help_text}"
        for option, kind, default, help_text in cls.describe_options()
    ] or ["  none"]
    defaults = ", ".join(f"{k}={v!r}" for k, v in cls.train_defaults.items()) or "the engine's"
    lines += [
        "",
        f"Training defaults: {defaults}",
        f"Trainable on {model} without the head: {count.without_head:,} (plus the head: width x classes + classes)",
        f"Merge: {'folds into a plain timm ViT (evaluated merged)' if cls.mergeable else 'no; evaluated unmerged'}",
    ]
    return "\n".join(lines) + "\n"


def method_facts() -> list[dict]:
    """Every registered method's summary, cited docstring, families, options and training defaults,
    as plain data for pages that must not import the methods (the site)."""
    return [
        {
            "name": name,
            "summary": cls.summary,
            "doc": inspect.cleandoc(cls.__doc__ or ""),
            "families": tuple(cls.families),
            "mergeable": cls.mergeable,
            "options": tuple((o, kind, repr(default), text) for o, kind, default, text in cls.describe_options()),
            "train_defaults": {k: repr(v) for k, v in cls.train_defaults.items()},
        }
        for name, cls in all_methods().items()
    ]
