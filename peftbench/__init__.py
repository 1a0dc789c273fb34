"""peftbench: one honest protocol for parameter-efficient fine-tuning of Vision Transformers.

Python API: `peftbench.build_model(method, model_name, num_classes, ...)` and `peftbench.merge(model)`.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("peftbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["build_model", "merge", "__version__"]


def __getattr__(name: str):
    # torch and timm load only when the API is used, so `peftbench report` stays quick
    if name in ("build_model", "merge"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'peftbench' has no attribute '{name}'")
