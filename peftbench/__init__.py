"""peftbench: one honest protocol for parameter-efficient fine-tuning of Vision Transformers.

Python API: `peftbench.build_model(method, model_name, num_classes, ...)` and `peftbench.merge(model)`.
"""

from ._version import __version__

__all__ = ["build_model", "merge", "__version__"]


def __getattr__(name: str):
    # torch and timm load only when the API is used, so `peftbench report` stays quick
    if name in ("build_model", "merge"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'peftbench' has no attribute '{name}'")
