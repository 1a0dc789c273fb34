"""VTAB-1k's label rules on decoded TFDS examples, one small function each, chosen by name in the suite's TOML.

Each rule follows the `preprocess_fn` of google-research/task_adaptation@d7630d3c43ba052b5a35546b312d9454a9f2c96b
(`task_adaptation/data/<module>.py`, cited per rule); our own code, written from reading theirs. A rule
takes the example ({feature key: list of values}, TFDS's flat keys such as `objects/location`) and its
parameters from the TOML, and returns the class; a missing or malformed feature raises `LabelError`,
which the loader turns into a one-line error naming the file and record.

Threshold rules share one binning: task_adaptation computes `reduce_max(where(edges - value < 0))`, the
largest index i with edges[i] < value (strictly), so a value equal to an edge falls into the lower bin.
"""

from __future__ import annotations

from typing import Any, Callable

from .tfrecord import Example

# clevr.py `_closest_object_preprocess_fn`: depth (pixel_coords[:, 2]) of the closest object
CLEVR_DISTANCE_EDGES = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# kitti.py `_closest_vehicle_distance_pp`: z (location[:, 2], metres) of the closest Car/Van/Truck; 1000 when none
KITTI_VEHICLE_EDGES = (-100.0, 8.0, 20.0, 999.0)
KITTI_VEHICLE_TYPES = (0, 1, 2)  # TFDS kitti objects/type ClassLabel: Car, Van, Truck (then Pedestrian, ...)
KITTI_NO_VEHICLE_DEPTH = 1000.0
CLEVR_MIN_OBJECTS = 3  # clevr.py `_count_preprocess_fn`: label = number of objects - 3 (scenes hold 3..10)


class LabelError(ValueError):
    """An example whose features do not give a label; the message says what was expected."""


def _values(example: Example, key: str, kind: type, width: int = 1) -> list:
    if key not in example:
        raise LabelError(f"feature '{key}' missing (features present: {', '.join(sorted(example)) or 'none'})")
    values = example[key]
    if values and not isinstance(values[0], kind):
        raise LabelError(f"feature '{key}' holds {type(values[0]).__name__} values; expected {kind.__name__}")
    if len(values) % width:
        raise LabelError(f"feature '{key}' holds {len(values)} values; expected a multiple of {width}")
    return list(values)


def bin_index(value: float, edges: tuple[float, ...]) -> int:
    """The largest i with edges[i] < value (task_adaptation's `reduce_max(where(edges - value < 0))`)."""
    below = [i for i, edge in enumerate(edges) if edge < value]
    if not below:
        raise LabelError(f"value {value} is not above the lowest bin edge {edges[0]}")
    return below[-1]


def class_label(example: Example, feature: str) -> int:
    """An integer (ClassLabel) feature as it is: most tasks, smallNORB's label_azimuth / label_elevation."""
    values = _values(example, feature, int)
    if len(values) != 1:
        raise LabelError(f"feature '{feature}' holds {len(values)} values; expected one class")
    return values[0]


def binned_class_label(example: Example, feature: str, original_classes: int, num_classes: int) -> int:
    """dsprites.py `preprocess_fn`: floor(value / (original_classes / num_classes)), nearby values grouped.

    E.g. label_orientation (40 values) into 16 classes: factor 2.5, so 0-2 -> 0, 3-4 -> 1, 5-7 -> 2, ...
    Computed in integers, floor(value * num_classes / original_classes), which equals TF's float32 floordiv
    for these small integers.
    """
    value = class_label(example, feature)
    if not 0 <= value < original_classes:
        raise LabelError(f"feature '{feature}' is {value}; expected 0..{original_classes - 1}")
    return value * num_classes // original_classes


def clevr_count_all(example: Example, feature: str = "objects/size") -> int:
    """clevr.py `_count_preprocess_fn`: the number of objects (entries of `objects/size`) minus 3."""
    return len(_values(example, feature, int)) - CLEVR_MIN_OBJECTS


def clevr_closest_object_distance(example: Example, feature: str = "objects/pixel_coords") -> int:
    """clevr.py `_closest_object_preprocess_fn`: the smallest depth (third pixel coordinate) of any object,
    binned by CLEVR_DISTANCE_EDGES into 6 classes."""
    coords = _values(example, feature, float, width=3)
    if not coords:
        raise LabelError(f"feature '{feature}' is empty; expected (x, y, depth) per object")
    return bin_index(min(coords[2::3]), CLEVR_DISTANCE_EDGES)


def kitti_closest_vehicle_distance(
    example: Example, type_feature: str = "objects/type", location_feature: str = "objects/location"
) -> int:
    """kitti.py `_closest_vehicle_distance_pp`: the smallest z of the objects of type Car, Van or Truck
    (1000 when there is none), binned by KITTI_VEHICLE_EDGES: <=8 m, 8-20 m, 20-999 m, no vehicle."""
    types = _values(example, type_feature, int)
    locations = _values(example, location_feature, float, width=3)
    if len(locations) != 3 * len(types):
        raise LabelError(
            f"'{location_feature}' holds {len(locations)} values for {len(types)} objects; expected 3 each"
        )
    depths = [locations[3 * i + 2] for i, kind in enumerate(types) if kind in KITTI_VEHICLE_TYPES]
    return bin_index(min([*depths, KITTI_NO_VEHICLE_DEPTH]), KITTI_VEHICLE_EDGES)


RULES: dict[str, Callable[..., int]] = {
    "class_label": class_label,
    "binned_class_label": binned_class_label,
    "clevr_count_all": clevr_count_all,
    "clevr_closest_object_distance": clevr_closest_object_distance,
    "kitti_closest_vehicle_distance": kitti_closest_vehicle_distance,
}
NEEDS_NUM_CLASSES = {"binned_class_label"}  # rules that also take the task's class count


def label_rule(name: str, params: dict[str, Any], num_classes: int) -> Callable[[Example], int]:
    """The rule `name` with its TOML parameters bound: example -> class."""
    if name not in RULES:
        raise KeyError(f"unknown label rule '{name}'; known rules: {', '.join(RULES)}")
    rule = RULES[name]
    bound = {**params, **({"num_classes": num_classes} if name in NEEDS_NUM_CLASSES else {})}
    return lambda example: rule(example, **bound)
