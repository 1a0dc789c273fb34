"""peftbench's `fewshot_fgvc` and `domain_generalization` suites and their `noah-fewshot` recipe, run beside
NOAH's released data code (its few-shot and domain-generalisation benchmarks).

    git clone https://github.com/ZhangYuanhan-AI/NOAH && git -C NOAH checkout e9c55f360be4f7f1133a08bf84f86f0309e98f8c
    python tools/faithfulness/noah_fewshot.py --source NOAH [--out noah_fewshot.md]

Their lib/datasets.py imports cv2 and skimage at the top for loaders these checks never call; two empty
modules stand in for them, and their code then runs unchanged:
- `general_dataset_few_shot` reads their own list files (the checkout's data/ folder) for every task of
  both suites, as their scripts call it (`--data-path=./data/<dataset> --data-set=<dataset>-FS`, the shot
  and split seed; the folder name matters to it: Stanford Cars' must hold `stanford_cars`, ImageNet's
  `imagenet`), against peftbench's `noah-lists` reader on the same tree: every (image, label) pair;
- `build_transform(is_train=False)` against the `noah-fewshot` recipe's evaluation inputs on JPEGs of
  several sizes; their training transform and mixup are reported, not reproduced;
- the evaluation rule (timm's `accuracy` on the 1000-way outputs, as their evaluate calls it, for every
  target, ImageNet-A's and -R's 200 classes included) against peftbench's top-1;
- the suites' training defaults against their scripts' flags and parser defaults, and the lr of every
  epoch against timm's scheduler stepped as supernet_train_prompt.py steps it (noah.py's helpers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from _common import Report, finish, max_abs, max_relative, parse_args, source_commit, source_link
from noah import CLONE, COMMIT, flags_of, their_defaults, their_lrs
from PIL import Image

from peftbench import engine
from peftbench.data.batches import BatchMaker
from peftbench.data.images import decode_for_recipe
from peftbench.data.loading import SplitData
from peftbench.data.noah_lists import read_split
from peftbench.data.recipes import RECIPES
from peftbench.methods import get_method
from peftbench.schedules import lr_per_epoch
from peftbench.settings import resolve
from peftbench.suites import get_suite

CPU = torch.device("cpu")
TARGETS = {  # our DG task -> the folder name their test script passes (configs/*/domain-generalization/slurm_test_imagenet.sh)
    "imagenet_v2": "imagenetv2", "imagenet_sketch": "imagenet-sketch", "imagenet_a": "imagenet-adversarial",
    "imagenet_r": "imagenet-rendition",
}  # fmt: skip


def install_shims() -> None:
    for name in ("cv2", "skimage", "skimage.io"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["skimage"].io = sys.modules["skimage.io"]


def their_samples(folder: Path, links: Path, data_set: str, train: bool, shot: int, seed: int) -> list[tuple[str, int]]:
    """(resolved image path, label) pairs of their dataset class over `folder`, reached through a link
    named as their scripts' --data-path names it (their path rules look at that name)."""
    from lib.datasets import general_dataset_few_shot

    name = {"standford-cars": "stanford_cars"}.get(folder.name, folder.name)
    link = links / data_set / name
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder.resolve(), target_is_directory=True)
    dataset = general_dataset_few_shot(str(link), f"{data_set}-FS", train=train, shot=shot, seed=seed)
    return [(str(Path(path).resolve()), label) for path, label in dataset.samples]


def our_samples(suite, task, split: str, data: Path) -> list[tuple[str, int]]:
    images, labels, _ = read_split(suite, task, split, data)
    return [(str(Path(image).resolve()), label) for image, label in zip(images, labels)]


def check_lists(report: Report, source: Path) -> None:
    data = source / "data"
    with tempfile.TemporaryDirectory() as links:
        fewshot, differ, pairs = get_suite("fewshot_fgvc"), [], 0
        for task in fewshot.tasks:
            train = data / task.lists["train"]
            shot, seed = (int(part.split("_")[-1]) for part in train.name.split(".")[-2:])
            folder = train.parent.parent
            for split, is_train in (("train", True), ("test", False)):
                theirs = their_samples(folder, Path(links), folder.name, is_train, shot, seed)
                ours = our_samples(fewshot, task, split, data)
                pairs += len(ours)
                if ours != theirs:
                    differ.append(f"{task.name} {split}")
        report.check(f"fewshot_fgvc: every task's train and test lists (their general_dataset_few_shot vs ours), "
                     f"{pairs:,} (image, label) pairs", f"{2 * len(fewshot.tasks) - len(differ)}/{2 * len(fewshot.tasks)}",
                     "all", not differ)  # fmt: skip
        dg, differ, pairs = get_suite("domain_generalization"), [], 0
        source_task = next(t for t in dg.tasks if t.name == "imagenet")
        imagenet = (data / source_task.lists["train"]).parent.parent
        checks = [("imagenet train", dg, source_task, "train", imagenet, "imagenet", True),
                  ("imagenet test", dg, source_task, "test", imagenet, "imagenet", False)]  # fmt: skip
        for task in dg.tasks:
            if task.name in TARGETS:
                folder = (data / task.lists["test"]).parent.parent
                checks.append((f"{task.name} test", dg, task, "test", folder, TARGETS[task.name], False))
        for what, suite, task, split, folder, data_set, is_train in checks:
            theirs = their_samples(folder, Path(links), data_set, is_train, 16, 0)
            ours = our_samples(suite, task, split, data)
            pairs += len(ours)
            if ours != theirs:
                differ.append(what)
        shared = all(t.lists["train"] == source_task.lists["train"] for t in dg.tasks)
        report.check(f"domain_generalization: ImageNet's 16-shot training list and the five test lists (theirs vs "
                     f"ours), {pairs:,} pairs; every target trains on the source's list",
                     f"{len(checks) - len(differ)}/{len(checks)}, shared: {shared}", "all", not differ and shared)  # fmt: skip


def jpegs(folder: Path) -> list[Path]:
    rng, paths = np.random.default_rng(0), []
    for i, (width, height) in enumerate([(500, 375), (300, 481), (224, 224), (640, 427), (187, 250)]):
        field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        path = folder / f"{i}.jpg"
        Image.fromarray(field).resize((width, height), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def check_preprocessing(report: Report) -> None:
    from lib.datasets import build_transform

    recipe = RECIPES["noah-fewshot"]
    args = argparse.Namespace(no_aug=False, mode="retrain", input_size=224, direct_resize=False, inception=False)
    with tempfile.TemporaryDirectory() as folder:
        paths = jpegs(Path(folder))
        theirs = torch.stack([build_transform(False, args)(Image.open(p).convert("RGB")) for p in paths])
        decoded = torch.from_numpy(np.ascontiguousarray(decode_for_recipe(paths, recipe, 224)))
        split = SplitData(decoded, torch.zeros(len(paths), dtype=torch.long))
        images = BatchMaker(split, recipe, 224, CPU, train=False)(torch.arange(len(paths)))
        difference = max_abs(engine.Normalise(*recipe.mean_std)(images), theirs)
    report.check("noah-fewshot test inputs vs their build_transform(is_train=False) (Resize((256, 256)) bicubic, "
                 "CenterCrop(224), ImageNet mean/std), 5 JPEGs of 187-640 px", difference, "1e-6", difference <= 1e-6)  # fmt: skip
    defaults = their_defaults_training()
    report.check("training inputs: theirs create_transform (RandAugment, colour jitter, random erasing) + mixup / "
                 "cutmix with label smoothing; ours a random 224 crop of the 256 resize + flip (not reproduced)",
                 defaults, "–", None)  # fmt: skip


def their_defaults_training() -> str:
    """Their parser's augmentation defaults, as their few-shot and DG scripts leave them."""
    import re

    text = Path(sys.path[0], "supernet_train_prompt.py").read_text()

    def default(flag: str) -> str:
        return re.search(rf"'--{flag}'[^)]*?default=([^,)\s]+)", text).group(1).strip("'\"")

    return (f"aa {default('aa')}, jitter {default('color-jitter')}, reprob {default('reprob')}, mixup "
            f"{default('mixup')}, cutmix {default('cutmix')}, smoothing {default('smoothing')}")  # fmt: skip


def check_evaluation(report: Report, source: Path) -> None:
    from timm.utils import accuracy

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 1000, generator=generator)
    labels = torch.randint(0, 200, (2000,), generator=generator) * 5  # 200 of the 1000 classes, as ImageNet-A's
    logits[torch.arange(0, 2000, 3), labels[::3]] += 4.0  # a third right
    theirs = float(accuracy(logits, labels, topk=(1,))[0])
    ours = engine._top1_of(logits.argmax(dim=1), SplitData(torch.zeros(0), labels))
    body = (source / "supernet_engine_prompt.py").read_text().split("\ndef evaluate", 1)[1].split("\ndef ", 1)[0]
    masked = "mask" in body
    report.check("top-1 over the 1000-way outputs (their evaluate: timm accuracy, no class mask) vs ours, "
                 "labels in 200 classes", f"{ours:.4f} vs {theirs:.4f}; mask in their evaluate: {masked}", "equal (their float32)",
                 abs(ours - theirs) < 1e-4 and not masked)  # fmt: skip


def check_recipe(report: Report, source: Path) -> None:
    defaults = their_defaults(source)
    scripts = sorted((source / "configs").glob("*/few-shot/slurm_train_*.sh")) + sorted(
        (source / "configs").glob("*/domain-generalization/slurm_train_*.sh")
    )
    flags = {tuple(flags_of(s).items()) for s in scripts}
    report.check(f"their {len(scripts)} few-shot and DG training scripts pass one set of flags", str(dict(next(iter(flags)))),
                 "one", len(flags) == 1)  # fmt: skip
    theirs = dict(next(iter(flags)))
    for suite_name in ("fewshot_fgvc", "domain_generalization"):
        suite = get_suite(suite_name)
        for method in ("lora_qkv", "adapter"):
            ours, _ = resolve(get_method(method), suite.defaults, {})
            mine = (ours.lr, ours.weight_decay, ours.batch_size, ours.total_epochs, ours.min_lr, ours.warmup_lr,
                    ours.warmup_epochs, ours.drop_path, ours.precision, ours.head_init)  # fmt: skip
            their = (theirs["lr"], theirs["weight_decay"], theirs["batch_size"], theirs["epochs"], defaults.min_lr,
                     defaults.warmup_lr, defaults.warmup_epochs, defaults.drop_path,
                     "fp16" if defaults.amp else "fp32", "trunc_normal")  # fmt: skip
            own = get_method(method).train_defaults
            report.check(f"{suite_name}, {method}: lr, wd, batch, epochs, min / warm-up lr, warm-up, drop path, "
                         f"precision, head init (the default protocol{'; the method sets ' + str(own) if own else ''})",
                         "equal" if mine == their else f"ours {mine} vs theirs {their}", "equal" if not own else "–",
                         mine == their if not own else None)  # fmt: skip
        ours, _ = resolve(get_method("lora_qkv"), suite.defaults, {})
        difference = max_relative(lr_per_epoch(ours), their_lrs(defaults, theirs["lr"], theirs["epochs"]))
        report.check(f"{suite_name}: lr of every epoch (suite defaults vs their scheduler and loop), max relative "
                     "difference", difference, "1e-9", difference <= 1e-9)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    install_shims()
    report = Report("NOAH's few-shot FGVC and domain generalisation: `fewshot_fgvc`, `domain_generalization`, "
                    "recipe `noah-fewshot`", source_link(CLONE, COMMIT, source_commit(args.source)),
                    "lib/datasets.py (general_dataset_few_shot, build_transform), data/few-shot/*/annotations, "
                    "data/domain-generalization/*/annotations, supernet_train_prompt.py, supernet_engine_prompt.py, "
                    "configs/*/{few-shot,domain-generalization}/*.sh")  # fmt: skip
    check_lists(report, args.source)
    check_preprocessing(report)
    check_evaluation(report, args.source)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
