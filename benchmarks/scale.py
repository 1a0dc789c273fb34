"""Scale rehearsal: VTAB-1k at its real size (19,000 training and 387,904 test images) on this machine.

`python benchmarks/scale.py --root /tmp/vtab-scale > scale.md` generates (once) a VTAB-1k tree in the
JPEG release's layout with every task's real split sizes and its dataset's native image size, then,
task by task, in a fresh process each:

1. builds the decode-once cache of train800val200 and test at 224 px (`vtab-resize`, PIL bicubic):
   images/s, minutes, the entry's disk footprint, the process's peak RSS while building;
2. opens the entries again (a hit: memory-mapped, checked) and assembles batches as a run does
   (`BatchMaker` on the host): evaluation batches of 256 in order over the whole test split, training
   batches of 64 in a random order over train800val200; images/s and the peak RSS while gathering
   (file pages of the mapped cache count in RSS);
3. deletes the entries unless `--keep-cache` (the whole cache takes ~27 GB: small images stay native).

Native sizes: the TFDS datasets' fixed sizes (CIFAR, SVHN 32; EuroSAT, dSprites 64; Camelyon, smallNORB
96; RESISC45 256; DMLab 360x480; CLEVR 320x480; KITTI 375x1242; retinopathy btgraham-300 300x300) and, for
the datasets of varying sizes, a typical one (Caltech-101 300x200, DTD 480x640, Flowers 500x667, Pets 375x500,
SUN397 375x500). Contents are smooth random fields saved as JPEG (PNG where TFDS stores PNG is not
modelled: decoding cost is of the same order). `--tasks cifar dtd` limits the run; `--fraction 0.1`
shrinks every split for a quick try (the figures then are not the rehearsal's); `--generate-only` writes
the tree and stops.

`--layout tfds` rehearses the TensorFlow Datasets tree instead (`<root>/<dataset>/<version>/`): every
TFDS split the definitions read (tasks/tfds/vtab1k.toml) at its real size (`TFDS_SIZES`, e.g. dSprites'
whole 737,280-example train split, of which VTAB-1k's test is a slice), records framed with their CRCs,
a few encoded images per dataset reused across records, and the features each label rule reads; the
tree is written by the tests' TFDS writer (tests/tfds_writer.py), streamed shard by shard.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from peftbench import provenance
from peftbench.data.batches import BatchMaker
from peftbench.data.loading import load_split
from peftbench.data.recipes import get_recipe
from peftbench.suites import get_suite

NATIVE = {  # task -> (height, width)
    "cifar": (32, 32), "caltech101": (200, 300), "dtd": (480, 640), "oxford_flowers102": (500, 667),
    "oxford_iiit_pet": (375, 500), "svhn": (32, 32), "sun397": (375, 500), "patch_camelyon": (96, 96),
    "eurosat": (64, 64), "resisc45": (256, 256), "diabetic_retinopathy": (300, 300), "clevr_count": (320, 480),
    "clevr_dist": (320, 480), "dmlab": (360, 480), "kitti": (375, 1242), "dsprites_loc": (64, 64),
    "dsprites_ori": (64, 64), "smallnorb_azi": (96, 96), "smallnorb_ele": (96, 96),
}  # fmt: skip
SIZE, RECIPE, EVAL_BATCH, TRAIN_BATCH = 224, "vtab-resize", 256, 64
TFDS_SIZES = {  # dataset -> TFDS split sizes of the real trees (tasks/tfds/vtab1k.toml's comments, TFDS's catalogue)
    "cifar100": {"train": 50000, "test": 10000}, "caltech101": {"train": 3060, "test": 6084},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669}, "svhn_cropped": {"train": 73257, "test": 26032},
    "sun397/tfds": {"train": 76128, "validation": 10875, "test": 21750},
    "patch_camelyon": {"train": 262144, "validation": 32768, "test": 32768}, "eurosat/rgb": {"train": 27000},
    "resisc45": {"train": 31500},
    "diabetic_retinopathy_detection/btgraham-300": {"train": 35126, "validation": 10906, "test": 42670},
    "clevr": {"train": 70000, "validation": 15000}, "dmlab": {"train": 65550, "validation": 22628, "test": 22735},
    "kitti": {"train": 6347, "validation": 423, "test": 711}, "dsprites": {"train": 737280},
    "smallnorb": {"train": 24300, "test": 24300},
}  # fmt: skip
RECORDS_PER_SHARD = 8192


def _encoded(height: int, width: int, seed: int, kind: str) -> bytes:
    """A smooth random image as the TFDS dataset stores it: JPEG, grey PNG (smallNORB) or a 0/1 PNG mask (dSprites)."""
    import io

    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    if kind == "mask":
        Image.fromarray((np.asarray(image.convert("L")) > 127).astype(np.uint8)).save(buffer, format="PNG")
    elif kind == "grey":
        image.convert("L").save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def generate_tfds_tree(root: Path, fraction: float, tasks: set[str]) -> float:
    """Every TFDS split the definitions of `tasks` read, at its real size (a dataset already written is
    skipped); seconds taken. A fraction below 1 leaves too few examples for the slices of most tasks."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import json

    from tfds_writer import VERSIONS, encode_example, frame, label_features

    from peftbench.data import tfds

    started = time.perf_counter()
    by_dataset: dict[str, list] = {}
    for definition in tfds.suite_tasks().values():
        by_dataset.setdefault(definition.dataset, []).append(definition)
    by_dataset = {d: ds for d, ds in by_dataset.items() if any(t.name in tasks for t in ds)}
    for dataset, definitions in by_dataset.items():
        name = dataset.split("/")[0]
        folder = root / dataset / VERSIONS.get(name, definitions[0].version.replace("*", "0"))
        if (folder / tfds.INFO).is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        height, width = NATIVE[definitions[0].name]
        kind = "mask" if name == "dsprites" else "grey" if name == "smallnorb" else "rgb"
        pool = [_encoded(height, width, seed, kind) for seed in range(32)]
        entries = []
        for split, size in TFDS_SIZES[dataset].items():
            size = max(1, round(size * fraction))
            shards = -(-size // RECORDS_PER_SHARD)
            lengths, total = [], 0
            for shard in range(shards):
                path = folder / f"{name}-{split}.tfrecord-{shard:05d}-of-{shards:05d}"
                indices = range(shard * RECORDS_PER_SHARD, min(size, (shard + 1) * RECORDS_PER_SHARD))
                with open(path, "wb") as handle:
                    for i in indices:
                        features = {"image": [pool[i % len(pool)]]}
                        for definition in definitions:
                            features.update(label_features(definition, (i * 7 + 3) % definition.num_classes))
                        handle.write(frame(encode_example(features)))
                lengths.append(str(len(indices)))
                total += path.stat().st_size
            entries.append({"name": split, "numBytes": str(total), "shardLengths": lengths})
        info = {"name": name, "version": folder.name, "fileFormat": "tfrecord", "splits": entries}
        (folder / tfds.INFO).write_text(json.dumps(info, indent=2))
        (folder / "features.json").write_text("{}")
        print(f"{dataset}: written", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def _write_image(job: tuple[str, int, int, int]) -> None:
    path, height, width, seed = job
    field = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(field).resize((width, height), Image.BILINEAR).save(path, quality=90)


def generate_task(folder: Path, task, fraction: float, pool) -> float:
    """Write the task's images and list files (skipped when its test list exists); seconds taken."""
    if (folder / "test.txt").is_file():
        return 0.0
    started = time.perf_counter()
    height, width = NATIVE[task.name]
    sizes = {split: max(1, round(n * fraction)) for split, n in task.splits.items() if split != "train800val200"}
    lines, jobs = {}, []
    for split, count in sizes.items():
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        relative = [f"images/{split}/{i:06d}.jpg" for i in range(count)]
        jobs += [(str(folder / r), height, width, hash((task.name, split, i)) % 2**32) for i, r in enumerate(relative)]
        lines[split] = [f"{r} {i % task.num_classes}" for i, r in enumerate(relative)]
    for _ in pool.imap_unordered(_write_image, jobs, chunksize=256):
        pass
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return time.perf_counter() - started


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _host_rate(maker: BatchMaker, order: torch.Tensor, batch: int) -> float:
    """Images/s of the host's part of making batches (`BatchMaker.host_batch`: the gather from the
    mapped cache), what runs before each copy to the device; the resize and flips run on the device."""
    started = time.perf_counter()
    for start in range(0, len(order), batch):
        maker.host_batch(order[start : start + batch])
    return len(order) / (time.perf_counter() - started)


def measure_task(name: str, root: str, cache_dir: str, layout: str = "vtab-lists") -> dict:
    """Run in a fresh process: build, reopen, gather; the figures of one task."""
    torch.set_num_threads(1)
    suite, recipe, device = get_suite("vtab1k"), get_recipe(RECIPE), torch.device("cpu")
    task = next(t for t in suite.tasks if t.name == name)
    out = {"task": name}
    for split in ("train800val200", "test"):
        started = time.perf_counter()
        built = load_split(suite, task, split, Path(root), SIZE, recipe, Path(cache_dir), layout)
        seconds = time.perf_counter() - started
        out[f"{split}_images"], out[f"{split}_build_s"] = len(built), seconds
    out["build_rss_mb"] = _peak_rss_mb()
    entries = list((Path(cache_dir) / "splits").iterdir())
    out["disk_gb"] = sum(f.stat().st_size for e in entries for f in e.iterdir()) / 1e9
    started = time.perf_counter()
    test = load_split(suite, task, "test", Path(root), SIZE, recipe, Path(cache_dir), layout)
    train = load_split(suite, task, "train800val200", Path(root), SIZE, recipe, Path(cache_dir), layout)
    out["open_s"] = time.perf_counter() - started
    in_order = torch.arange(len(test))
    shuffled = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for staged in (False, True):  # before: a fresh tensor per batch; after: reused (on CUDA pinned) buffers
        name = "staged" if staged else "plain"
        maker = BatchMaker(test, recipe, SIZE, device, train=False, staged=staged)
        out[f"eval_{name}"] = _host_rate(maker, in_order, EVAL_BATCH)
        maker = BatchMaker(train, recipe, SIZE, device, train=True, staged=staged)
        out[f"train_{name}"] = _host_rate(maker, shuffled, TRAIN_BATCH)
    out["gather_rss_mb"] = _peak_rss_mb()
    return out


def _in_child(name: str, root: Path, cache_dir: Path, layout: str) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_task, (name, str(root), str(cache_dir), layout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the generated VTAB-1k tree lives")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: <root>/../scale-cache)")
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument("--generate-only", action="store_true", help="write the tree and stop")
    parser.add_argument("--layout", choices=("vtab-lists", "tfds"), default="vtab-lists")
    args = parser.parse_args()
    suite = get_suite("vtab1k")
    tasks = [t for t in suite.tasks if not args.tasks or t.name in args.tasks]
    data = args.root / suite.subdir if suite.subdir else args.root
    cache_root = args.cache or args.root.parent / "scale-cache"
    rows = []
    if args.layout == "tfds":
        seconds = generate_tfds_tree(data, args.fraction, {t.name for t in tasks})
        print(f"TFDS tree written in {seconds:.0f} s", file=sys.stderr, flush=True)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for task in tasks:
            generated = 0.0 if args.layout == "tfds" else generate_task(data / task.name, task, args.fraction, pool)
            if args.generate_only:
                print(f"{task.name}: generated in {generated:.0f} s", file=sys.stderr, flush=True)
                continue
            cache_dir = cache_root / task.name
            shutil.rmtree(cache_dir, ignore_errors=True)
            row = {**_in_child(task.name, args.root, cache_dir, args.layout), "generate_s": generated}
            if not args.keep_cache:
                shutil.rmtree(cache_dir, ignore_errors=True)
            rows.append(row)
            print(f"{task.name}: {row}", file=sys.stderr, flush=True)
    if rows:
        print(render(rows, args))


def render(rows: list[dict], args) -> str:
    cpu = provenance.cpu_model()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    lines = [
        f"Machine: {cpu}, {multiprocessing.cpu_count()} cores; python {platform.python_version()}, torch "
        f"{torch.__version__}; git {commit}; layout {args.layout}; fraction {args.fraction:g} of the real split sizes; cache at {SIZE} px "
        f"({RECIPE}); one thread per measuring process.",
        "",
        "| task | native (h x w) | train + test images | cache build (images/s) | build (min) | cache on disk (GB) | "
        "peak RSS building (MB) | reopen (s) | eval batches, before (images/s) | eval batches, after | "
        "train batches, before | train batches, after | peak RSS gathering (MB) |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        images = r["train800val200_images"] + r["test_images"]
        seconds = r["train800val200_build_s"] + r["test_build_s"]
        h, w = NATIVE[r["task"]]
        lines.append(
            f"| {r['task']} | {h} x {w} | {images:,} | {images / seconds:,.0f} | {seconds / 60:.1f} | "
            f"{r['disk_gb']:.2f} | {r['build_rss_mb']:,.0f} | {r['open_s']:.2f} | {r['eval_plain']:,.0f} | "
            f"{r['eval_staged']:,.0f} | {r['train_plain']:,.0f} | {r['train_staged']:,.0f} | {r['gather_rss_mb']:,.0f} |"
        )
    images = sum(r["train800val200_images"] + r["test_images"] for r in rows)
    seconds = sum(r["train800val200_build_s"] + r["test_build_s"] for r in rows)
    eval_images = sum(r["test_images"] for r in rows)
    train_images = sum(r["train800val200_images"] for r in rows)

    def overall(column: str, count: str, total: int) -> str:  # images over seconds summed across tasks
        return f"{total / sum(r[count] / r[column] for r in rows):,.0f}"

    lines.append(
        f"| **all** | | {images:,} | {images / seconds:,.0f} | {seconds / 60:.1f} | "
        f"{sum(r['disk_gb'] for r in rows):.2f} | {max(r['build_rss_mb'] for r in rows):,.0f} | | "
        f"{overall('eval_plain', 'test_images', eval_images)} | {overall('eval_staged', 'test_images', eval_images)} | "
        f"{overall('train_plain', 'train800val200_images', train_images)} | "
        f"{overall('train_staged', 'train800val200_images', train_images)} | {max(r['gather_rss_mb'] for r in rows):,.0f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
