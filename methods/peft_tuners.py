"""Hugging Face peft's tuners as peftbench methods: `peft-lora`, `peft-dora`, `peft-vera`, ...

Each method builds the tuner's peft config and injects it into the timm ViT through peft's own
tuner class (`PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]`, what `get_peft_model` builds inside
its PeftModel), so the model stays a timm ViT with the same forward; peft freezes everything but the
adapter, and peftbench keeps its zero-initialised head trainable. Merging is peft's
`merge_and_unload()`, on a copy: a plain timm ViT with timm's keys.

peft is an optional extra (`pip install "peftbench[peft]"`), imported only when such a method is
applied. Options are the tuner's own peft fields, with peft's defaults (tests/methods/test_peft_tuners.py
holds them against the installed peft), plus `target_modules` (a regular expression over the ViT's
module names, which peft matches in full, inside Swin's and ConvNeXt's stages too) and `config` (a JSON object of any other field of the
tuner's config, e.g. `--set config='{"init_lora_weights": "gaussian"}'`).

Default targets: timm fuses q, k and v into one `attn.qkv` Linear, and peft adapts a Linear whole.
peft's own ViT image-classification example puts LoRA on query and value; VeRA's and FourierFT's
ViT results adapt query and value too; on a fused qkv the nearest is the whole `qkv` (k included),
which is the default of every tuner here except IA³, whose paper scales keys, values and the FFN's
inner activations (`qkv` outputs and `fc2` inputs here). So `peft-lora` is `lora_qkv`'s shape with
peft's alpha / r scaling, not peftbench's `lora` (q and v only, from the fused weights; it equals
peft's LoRA on split q and v projections: tools/faithfulness/peft_lora.py, run by the tests).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import re
from typing import Any, ClassVar

from torch import nn

from peftbench.anatomy import ALL_FAMILIES, family_of
from peftbench.errors import PeftbenchError

from ._registry import register_method
from .base import Method, option

PEFT_EXTRA = 'pip install "peftbench[peft]"'
MIN_PEFT = "0.13"
QKV = r"blocks\.\d+\.attn\.qkv"
QKV_AND_FC2 = r"blocks\.\d+\.(attn\.qkv|mlp\.fc2)"
FC2 = r"blocks\.\d+\.mlp\.fc2"
# Swin's and ConvNeXt's blocks sit in stages (`layers.s.blocks.i`, `stages.s.blocks.i`): a target
# regex matches a block's modules in every family, as it would in a ViT.
STAGE_PREFIX = r"(?:(?:layers|stages)\.\d+\.)?"
TUNER_ATTRIBUTE = "_peft_tuner"  # kept in the model's __dict__: not a submodule, copied with the model


@dataclasses.dataclass(frozen=True)
class Tuner:
    """One peft tuner: its config class, its paper, the fields exposed as options and the fields fixed."""

    config: str  # the peft config class
    title: str  # the method as its paper names it
    paper: str
    fields: tuple[tuple[str, type, Any, str], ...]  # (peft field, type, peft's default, help)
    fixed: tuple[tuple[str, Any], ...] = ()  # fields this variant sets (DoRA: use_dora=True)
    target: str = QKV
    targets_from: str = "peft's ViT example (query and value), here the fused qkv"

    def label(self, options: dict[str, Any]) -> str:
        """How a table names the variant: the tuner and its first (size) option."""
        name, *_ = self.fields[0]
        return f"{self.title}, {name}={options[name]}"


RANK = ("r", int, 8, "rank r of the update")
LORA_FIELDS = (RANK, ("lora_alpha", int, 8, "alpha (the update is scaled by alpha / r)"),
               ("lora_dropout", float, 0.0, "dropout on the low-rank branch's input"))  # fmt: skip
LYCORIS_FIELDS = (RANK, ("alpha", int, 8, "alpha (scaling alpha / r)"),
                  ("rank_dropout", float, 0.0, "dropout on each rank during training"),
                  ("module_dropout", float, 0.0, "probability of skipping the whole adapter in a step"))  # fmt: skip
TUNERS = {
    "lora": Tuner("LoraConfig", "LoRA", "Hu et al., ICLR 2022", LORA_FIELDS),
    "dora": Tuner("LoraConfig", "DoRA", "Liu et al., ICML 2024", LORA_FIELDS, (("use_dora", True),)),
    "rslora": Tuner("LoraConfig", "rsLoRA", "Kalajdzievski, 2023", LORA_FIELDS, (("use_rslora", True),)),
    "vera": Tuner(
        "VeraConfig",
        "VeRA",
        "Kopiczko et al., ICLR 2024",
        (
            ("r", int, 256, "rank of the shared frozen random projections"),
            ("vera_dropout", float, 0.0, "dropout on the branch's input"),
        ),
        targets_from="VeRA's ViT results (query and value), here the fused qkv",
    ),  # fmt: skip
    "oft": Tuner(
        "OFTConfig",
        "OFT",
        "Qiu et al., NeurIPS 2023",
        (
            ("oft_block_size", int, 32, "size of the orthogonal blocks"),
            ("module_dropout", float, 0.0, "multiplicative dropout of the orthogonal blocks"),
        ),
    ),  # fmt: skip
    "boft": Tuner(
        "BOFTConfig",
        "BOFT",
        "Liu et al., ICLR 2024",
        (
            ("boft_block_size", int, 4, "size of the butterfly blocks"),
            ("boft_n_butterfly_factor", int, 1, "number of butterfly factors"),
            ("boft_dropout", float, 0.0, "multiplicative dropout of the blocks"),
        ),
    ),  # fmt: skip
    "hra": Tuner(
        "HRAConfig", "HRA", "Yuan et al., NeurIPS 2024", (("r", int, 8, "number of Householder reflections"),)
    ),
    "loha": Tuner("LoHaConfig", "LoHa", "Hyeon-Woo et al., ICLR 2022 (FedPara); LyCORIS", LYCORIS_FIELDS),
    "lokr": Tuner("LoKrConfig", "LoKr", "Yeh et al., ICLR 2024 (LyCORIS)", LYCORIS_FIELDS),
    "ia3": Tuner(
        "IA3Config",
        "IA³",
        "Liu et al., NeurIPS 2022",
        (),
        target=QKV_AND_FC2,
        targets_from="the IA³ paper (keys, values and the FFN's inner activations), here the fused qkv "
        "outputs and the fc2 inputs",
    ),  # fmt: skip
    "fourierft": Tuner(
        "FourierFTConfig",
        "FourierFT",
        "Gao et al., ICML 2024",
        (
            ("n_frequency", int, 1000, "number of learned spectral coefficients per layer"),
            ("scaling", float, 150.0, "scale of the spectral update"),
        ),
        targets_from="FourierFT's ViT results (query and value), here the fused qkv",
    ),  # fmt: skip
    "road": Tuner("RoadConfig", "RoAd", "Liao et al., 2024", (("variant", str, "road_1", "road_1 | road_2 | road_4"),)),
    "shira": Tuner(
        "ShiraConfig",
        "SHiRA",
        "Bhardwaj et al., 2024",
        (("r", int, 32, "sets the number of trainable entries, r (in + out)"),),
    ),
    "randlora": Tuner(
        "RandLoraConfig",
        "RandLoRA",
        "Albert et al., ICLR 2025",
        (
            ("r", int, 32, "rank of each shared random basis"),
            ("randlora_alpha", int, 640, "scaling alpha"),
            ("randlora_dropout", float, 0.0, "dropout on the branch's input"),
        ),
    ),  # fmt: skip
    "miss": Tuner(
        "MissConfig",
        "MiSS",
        "Kang & Yin, 2024",
        (("r", int, 64, "the shard size"), ("miss_dropout", float, 0.0, "dropout on the input")),
    ),  # fmt: skip
    "delora": Tuner(
        "DeloraConfig",
        "DeLoRA",
        "Bini et al., ICLR 2025",
        (
            RANK,
            ("delora_lambda", int, 15, "the boundary lambda of the decoupled update"),
            ("module_dropout", float, 0.0, "dropout on the branch's input"),
        ),
    ),  # fmt: skip
}


@dataclasses.dataclass
class PeftTuner(Method):
    """Shared implementation of the peft family (see the module docstring)."""

    tuner: ClassVar[Tuner]
    mergeable = True
    families = ALL_FAMILIES  # where the targets exist: ConvNeXt has no qkv, set target_modules to its MLP
    requires = f"Hugging Face peft ≥ {MIN_PEFT} ({PEFT_EXTRA})"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("peft") is not None

    def __post_init__(self) -> None:
        extra = self.extra_fields()
        fixed = {name for name, _ in self.tuner.fixed}
        clash = sorted(set(extra) & (fixed | {f[0] for f in self.tuner.fields} | {"target_modules"}))
        if clash:
            raise PeftbenchError(f"{self.name}: set {clash[0]} with --set {clash[0]}=..., not inside config")
        try:
            re.compile(self.target_modules)
        except re.error as exc:
            raise PeftbenchError(
                f"{self.name}: target_modules is not a regular expression ({exc}): '{self.target_modules}'"
            ) from None

    def extra_fields(self) -> dict[str, Any]:
        if not self.config.strip():
            return {}
        try:
            extra = json.loads(self.config)
        except json.JSONDecodeError as exc:
            raise PeftbenchError(
                f"{self.name}: config must be a JSON object, e.g. '{{\"init_weights\": false}}' ({exc})"
            ) from None
        if not isinstance(extra, dict):
            raise PeftbenchError(f"{self.name}: config must be a JSON object, got {type(extra).__name__}")
        return extra

    def peft_config(self):
        """The tuner's peft config from the options, or a one-line error naming the peft version."""
        peft = import_peft(self.name)
        config_class = getattr(peft, self.tuner.config, None)
        if config_class is None:
            raise PeftbenchError(f"{self.name} needs peft's {self.tuner.config}, which peft {peft.__version__} lacks; "
                                 f"upgrade peft ({PEFT_EXTRA})")  # fmt: skip
        values = {name: getattr(self, name) for name, *_ in self.tuner.fields}
        values.update(dict(self.tuner.fixed), target_modules=staged(self.target_modules), **self.extra_fields())
        if self.tuner.config == "IA3Config":
            values.setdefault("feedforward_modules", staged(FC2))
        try:
            return config_class(**values)
        except (TypeError, ValueError) as exc:
            raise PeftbenchError(f"{self.name}: peft {peft.__version__} refuses the config: {one_line(exc)}") from None

    def apply(self, model: nn.Module) -> None:
        config = self.peft_config()
        peft = import_peft(self.name)
        if not any(re.fullmatch(staged(self.target_modules), name) for name, _ in model.named_modules()):
            raise PeftbenchError(
                f"{self.name}: target_modules '{self.target_modules}' matches no module of this "
                f"{family_of(model)} backbone; pass --set target_modules=REGEX, e.g. "
                r"'blocks\.\d+\.attn\.(q|v)_proj' (EVA-02) or 'blocks\.\d+\.mlp\.fc[12]' (ConvNeXt)"
            )
        try:
            tuner = peft.PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type](model, config, "default")
        except (TypeError, ValueError) as exc:
            raise PeftbenchError(
                f"{self.name}: peft {peft.__version__} cannot adapt this model: {one_line(exc)}"
            ) from None
        model.__dict__[TUNER_ATTRIBUTE] = tuner

    def merge(self, model: nn.Module) -> nn.Module:
        """peft's `merge_and_unload()` on a copy of the model: a plain timm ViT."""
        copied = copy.deepcopy(model)
        merged = copied.__dict__.pop(TUNER_ATTRIBUTE).merge_and_unload()
        merged.__dict__.pop(TUNER_ATTRIBUTE, None)
        return merged

    def describe_adapted(self, model: nn.Module) -> dict[str, Any]:
        """The peft version, the tuner and its full config, for the run's record."""
        peft = import_peft(self.name)
        config = model.__dict__[TUNER_ATTRIBUTE].peft_config["default"]
        options = {name: getattr(self, name) for name, *_ in self.tuner.fields}
        return {"library": "peft", "version": peft.__version__, "tuner": config.peft_type.value,
                "label": self.tuner.label(options) if options else self.tuner.title,
                "config": json.loads(json.dumps(config.to_dict(), default=str))}  # fmt: skip


def staged(pattern: str) -> str:
    """`pattern` also matching inside hierarchical stages (peft matches target regexes in full)."""
    return f"{STAGE_PREFIX}(?:{pattern})"


def import_peft(method: str):
    try:
        import peft
    except ImportError:
        raise PeftbenchError(f"method '{method}' needs Hugging Face peft ≥ {MIN_PEFT}: {PEFT_EXTRA}") from None
    return peft


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _docstring(key: str, tuner: Tuner) -> str:
    fixed = ", ".join(f"{k}={v!r}" for k, v in tuner.fixed)
    return (
        f"{tuner.title} ({tuner.paper}) through Hugging Face peft's `{tuner.config}`"
        + (f" with {fixed}" if fixed else "")
        + f", injected into the timm ViT by peft's tuner class. Default targets: `{tuner.target}`, from "
        f"{tuner.targets_from}. Options: the config's own fields at peft's defaults, `target_modules` (a regex "
        "over module names) and `config` (JSON of further fields). Trainable: what peft marks trainable, and the "
        "head. Merge: peft's merge_and_unload() into a plain timm ViT. Needs " + PEFT_EXTRA + "."
    )


def _register(key: str, tuner: Tuner) -> type[PeftTuner]:
    fields = [(name, kind, option(default, help)) for name, kind, default, help in tuner.fields]
    fields += [("target_modules", str, option(tuner.target, "regex over the ViT's module names (peft matches it in full)")),
               ("config", str, option("", "JSON object of further fields of the peft config"))]  # fmt: skip
    cls = dataclasses.make_dataclass(f"Peft{key.capitalize()}", fields, bases=(PeftTuner,))
    cls.tuner = tuner
    cls.summary = f"{tuner.title} ({tuner.paper}), Hugging Face peft's tuner"
    cls.__doc__ = _docstring(key, tuner)
    cls.__module__ = __name__
    return register_method(f"peft-{key}")(cls)


for _key, _tuner in TUNERS.items():
    _register(_key, _tuner)
