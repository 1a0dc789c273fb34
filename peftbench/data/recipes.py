"""Preprocessing recipes: how a split's images become model inputs, per (method, suite).

Sizes are relative to the model's input S. A recipe is split between the decode-once cache
(the PIL resize, done once) and the device (resize of natively stored images, crops, flips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import PeftbenchError


@dataclass(frozen=True)
class Recipe:
    name: str
    resize: str  # "square": to (T, T); "shorter": shorter side to T, aspect kept (VPT's Resize(256))
    scale: float  # T = round(S * scale)
    crop: bool  # crop T to S: random when training, centre when evaluating
    hflip: bool  # random horizontal flip when training
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # None: the backbone's
    filter: str = "bicubic"  # PIL's resampling filter for the cached resize: bicubic | bilinear

    @property
    def augments(self) -> bool:
        """True when training inputs vary between epochs (no feature caching then)."""
        return self.crop or self.hflip

    def resize_to(self, input_size: int) -> int:
        return round(input_size * self.scale)

    def describe(self) -> dict:
        return asdict(self)

    def decoding(self) -> dict:
        """What the decode-once cache depends on (recipes differing only in flips or mean/std share entries)."""
        decoding = {"resize": self.resize, "scale": self.scale, "crop": self.crop}
        return decoding if self.filter == "bicubic" else {**decoding, "filter": self.filter}


HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


RECIPES = {
    # VTAB-1k as VPT, NOAH, SSF and RLRR: bicubic resize to the input size, nothing else.
    "vtab-resize": Recipe("vtab-resize", resize="square", scale=1.0, crop=False, hflip=False),
    # ... plus a random horizontal flip, for the tasks whose published settings flip (RLRR's hflip column).
    "vtab-resize-hflip": Recipe("vtab-resize-hflip", resize="square", scale=1.0, crop=False, hflip=True),
    # The same with mean = std = 0.5 whatever the backbone's config says (RLRR's train_vtab.py, SSF's scripts).
    "vtab-resize-half": Recipe("vtab-resize-half", resize="square", scale=1.0, crop=False, hflip=False, mean_std=HALF),
    "vtab-resize-hflip-half": Recipe(
        "vtab-resize-hflip-half", resize="square", scale=1.0, crop=False, hflip=True, mean_std=HALF
    ),
    # ... with ImageNet mean/std (NOAH's VTAB-1k baselines LoRA-8, Adapter-8).
    "vtab-resize-imagenet": Recipe(
        "vtab-resize-imagenet", resize="square", scale=1.0, crop=False, hflip=False, mean_std=IMAGENET
    ),
    # ... with a bilinear resize and the backbone's mean/std (Adapter+: TFDS images resized by
    # tf.image.resize, bilinear; on the JPEG release PIL's bilinear is the nearest filter we have).
    "vtab-resize-bilinear": Recipe(
        "vtab-resize-bilinear", resize="square", scale=1.0, crop=False, hflip=False, filter="bilinear"
    ),  # fmt: skip
    # FGVC as VPT (src/data/transforms.py): torchvision's Resize(256) (shorter side; on PIL images, PIL
    # bilinear) + RandomCrop(224) + flip; test CentreCrop(224).
    "vpt-fgvc": Recipe("vpt-fgvc", resize="shorter", scale=256 / 224, crop=True, hflip=True, filter="bilinear"),
    # FGVC as RLRR's train_fgvc.py (RLRRDatasets/fgvc_tranforms.py): torchvision's Resize((256, 256)) on PIL
    # images, i.e. PIL bilinear, + RandomCrop(224) + flip (test CenterCrop(224)), mean = std = 0.5.
    "rlrr-fgvc": Recipe(
        "rlrr-fgvc", resize="square", scale=256 / 224, crop=True, hflip=True, mean_std=HALF, filter="bilinear"
    ),
    # NOAH's few-shot and domain-generalisation runs (lib/datasets.py build_transform, ZhangYuanhan-AI/NOAH@e9c55f3):
    # test Resize((256, 256)) bicubic + CenterCrop(224), ImageNet mean/std, as here. Their training inputs go through
    # timm's create_transform (RandAugment, random-resized crop, random erasing) and mixup / cutmix, which peftbench
    # does not implement: training here is a random 224 crop of the same resize + flip.
    "noah-fewshot": Recipe("noah-fewshot", resize="square", scale=256 / 224, crop=True, hflip=True, mean_std=IMAGENET),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise PeftbenchError(f"unknown preprocessing recipe '{name}'; valid recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
