"""The method interface every fine-tuning method implements.

A method is a dataclass whose fields are its hyper-parameters (settable with `--set name=value`),
each declared with `option(default, help)` so that `peftbench describe` can say what it does.
It is applied to a timm backbone of one of the `families` it declares (peftbench/anatomy.py: vit, swin,
convnext, eva) whose head the engine has already replaced with a zero-initialised one; the engine keeps
that head trainable whatever the method freezes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn

from peftbench.errors import PeftbenchError

from ._fold import fold_wrappers


@dataclasses.dataclass
class Method:
    """Base class: subclass it as a dataclass, register it, implement `apply`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Engine settings this method changes by default (e.g. {"optimizer": "sgd", "lr": 0.1}).
    train_defaults: ClassVar[dict[str, Any]] = {}
    # True when the adapted model folds back into a plain timm ViT (see `merge`).
    mergeable: ClassVar[bool] = False
    # `--protocol tune`'s default grid (setting -> values) where the suite and `--grid` give none.
    tune_grid: ClassVar[dict[str, tuple]] = {"lr": (1e-2, 5e-3, 1e-3, 5e-4, 1e-4), "weight_decay": (1e-2, 1e-4, 0.0)}
    # True when grid learning rates are per 256 images and scale with the batch size (VPT's tune_vtab.py).
    tune_lr_per_256: ClassVar[bool] = False
    # An optional dependency the method needs, as its install command names it ("" for none).
    requires: ClassVar[str] = ""
    # The backbone families (peftbench/anatomy.py) the method is defined on, and why not the others.
    families: ClassVar[tuple[str, ...]] = ("vit",)
    not_defined_because: ClassVar[str] = "its paper and released code define it on ViT only"

    @classmethod
    def available(cls) -> bool:
        """Whether the method's optional dependency is installed (`all` leaves the others out)."""
        return True

    @classmethod
    def check_family(cls, family: str) -> None:
        """A one-line error when the method is not defined on `family`."""
        if family not in cls.families:
            why = f": {cls.not_defined_because}" if cls.not_defined_because else ""
            raise PeftbenchError(
                f"method '{cls.name}' is defined on {', '.join(cls.families)} backbones, not on {family}{why}"
            )

    @classmethod
    def option_fields(cls) -> dict[str, dataclasses.Field]:
        """The method's own hyper-parameters by name."""
        return {f.name: f for f in dataclasses.fields(cls)}

    def apply(self, model: nn.Module) -> None:
        """Add this method's parameters to `model` and set `requires_grad` on what trains."""
        raise NotImplementedError

    def describe_adapted(self, model: nn.Module) -> dict[str, Any] | None:
        """What `apply` built, for the run's record when the options do not say it all (a library's
        version and full config, and a short `label` for tables); None for most methods."""
        return None

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Names of trainable parameters that take no weight decay.

        Default, as timm and the PEFT codebases: every parameter with fewer than two dimensions
        (biases, norm weights, scale/shift vectors) plus the tokens timm names (pos_embed, cls_token).
        """
        named = set(getattr(model, "no_weight_decay", lambda: set())())
        return {n for n, p in model.named_parameters() if p.ndim <= 1 or n in named}

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the method into the frozen weights, returning a plain timm ViT (mergeable methods).

        Default: every `FoldableWrapper` folded into its layer, in a copy (methods/_fold.py); a
        model without wrappers (full, linear, BitFit) is already plain and is returned as is."""
        if not self.mergeable:
            raise NotImplementedError(f"method '{self.name}' cannot be merged into the backbone")
        return fold_wrappers(model)

    @classmethod
    def describe_options(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) of each option, for `peftbench describe`."""
        return [
            (f.name, f.type if isinstance(f.type, str) else f.type.__name__, f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
        ]


def option(default: Any, help: str, key_neutral: Any = dataclasses.MISSING) -> Any:
    """A method option with its help text: `rank: int = option(8, "the rank r")`.

    An option added later, or whose default changes, names in `key_neutral` the value that reproduces
    the behaviour from before; while its default differs from that value, every spec holds it, so
    runs keyed before the change are not mistaken for runs of the new behaviour (spec.py)."""
    metadata = {"help": help} if key_neutral is dataclasses.MISSING else {"help": help, "key_neutral": key_neutral}
    return dataclasses.field(default=default, metadata=metadata)


def freeze_all(model: nn.Module) -> None:
    """Set `requires_grad=False` on every parameter of `model`."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
