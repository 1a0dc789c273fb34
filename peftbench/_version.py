"""The installed peftbench version (a source tree that is not installed says 0.0.0+source)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("peftbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
