"""Built-in fine-tuning methods, one module each; importing this package registers them.

`get_method`, `all_methods` and `resolve_method_names` look methods up by name, plugins included.
"""

from . import (  # noqa: F401  (registers the built-ins)
    adapter,
    adapter_plus,
    bitfit,
    convpass,
    fact,
    full,
    linear,
    lora,
    lora_qkv,
    noah,
    norm_tuning,
    peft_tuners,
    repadapter,
    rlrr,
    sequential_adapters,
    ssf,
    vpt,
)
from ._registry import all_methods, get_method, register_method, resolve_method_names
from .base import Method, freeze_all

__all__ = ["Method", "all_methods", "freeze_all", "get_method", "register_method", "resolve_method_names"]
