"""Data: on-disk layouts, decoding into uint8 tensors, and the generated demo tasks."""

from .loading import SplitData, load_split, prepare_suite_data

__all__ = ["SplitData", "load_split", "prepare_suite_data"]
