"""The CPU comparisons of BENCHMARKS.md, measured side by side in one run (random weights,
synthetic inputs): `python benchmarks/cpu.py > cpu.md`.

1. harness: the engine's training loop (uint8 batches gathered and normalised in the loop, the
   schedule, the logged-loss sync) against the bare forward/backward/step of the same model on a
   float tensor already in memory — ViT-S/16, LoRA, batch 16.
2. linear probing for 100 epochs: the engine's cached-feature path against re-running the frozen
   backbone every epoch (`feature_cache=False`) — ViT-S/16, 32 images, batch 32.
3. inference: each method's evaluation images/s unmerged and merged against the plain backbone —
   ViT-B/16, batch 8.
4. the RLRR training step against its floor — ViT-B/16, batch 4: the frozen step (backward through
   every block, no weight gradients), the floor (the same plus the weight gradients of qkv, proj,
   fc1 and fc2) and peftbench's RLRR step (forward, backward and its AdamW step).

5. the decode-once cache (`python benchmarks/cpu.py cache`): building a split's entry from JPEG
   files (decode + PIL bicubic resize to 224) against opening it again (memory-mapped, checked).

Each comparison alternates its contenders for several rounds and reports the median per round.
`python benchmarks/cpu.py [harness linear inference rlrr cache]` runs the named sections (default:
the first four).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from peftbench import engine, provenance
from peftbench.api import build_model, method_of
from peftbench.backbone import model_input_size_of, normalisation
from peftbench.bench import RECIPE, synthetic_split
from peftbench.data import load_split
from peftbench.data.batches import BatchMaker
from peftbench.settings import TrainConfig
from peftbench.suites import get_suite

CPU = torch.device("cpu")
CLASSES = 100
ADAPTED_LINEARS = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def median_seconds(contenders: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Each contender's median time, running them in turn for `rounds` rounds after `warmup`."""
    for run in contenders.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def harness_against_bare(
    model_name: str = "vit_small_patch16_224", batch: int = 16, steps: int = 4, rounds: int = 5
) -> list[str]:
    torch.manual_seed(0)
    model = build_model("lora", model_name, CLASSES, pretrained=False).train()
    method = method_of(model)
    size = model_input_size_of(model)
    optimizer = engine.build_optimizer(model, method.no_weight_decay(model), TrainConfig(), CPU)
    normalise = engine.Normalise(*normalisation(model))
    stored = synthetic_split(steps * batch, size, CLASSES)
    native = synthetic_split(steps * batch, 32, CLASSES)  # CIFAR-sized, resized on the device per batch
    cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=batch, log_every=steps, lr=1e-4)

    def harness(split) -> Callable[[], None]:
        batches = BatchMaker(split, RECIPE, size, CPU, train=True, resident=True)
        forward = engine.images_forward(model, normalise)
        return lambda: engine.fit(forward, optimizer, batches, split.labels, cfg, CPU, engine.SilentListener())

    inputs = normalise(stored.images[:batch])
    labels = stored.labels[:batch]

    def bare() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()

    seconds = median_seconds({"bare": bare, "harness": harness(stored), "harness_native": harness(native)}, rounds)
    rate = {name: steps * batch / s for name, s in seconds.items()}
    return [
        f"### 1. Training loop against the bare step ({model_name}, LoRA, batch {batch}, {steps} steps × {rounds} rounds)",
        "",
        "| path | images/s | ratio to bare |",
        "|---|---:|---:|",
        f"| bare forward/backward/AdamW on a float tensor in memory | {rate['bare']:.2f} | 1.00 |",
        f"| harness, images stored at 224 px (uint8 → normalised in the loop) | {rate['harness']:.2f} | {rate['harness'] / rate['bare']:.3f} |",
        f"| harness, images stored at 32 px (PIL-exact bicubic resize per batch, as native VTAB images) | {rate['harness_native']:.2f} | {rate['harness_native'] / rate['bare']:.3f} |",
        "",
    ]


def linear_probe_cached_against_rerun(
    model_name: str = "vit_small_patch16_224", images: int = 32, epochs: int = 100
) -> list[str]:
    size = 224
    train = synthetic_split(images, size, CLASSES, seed=1)
    test = synthetic_split(images, size, CLASSES, seed=2)
    cfg = TrainConfig(epochs=epochs, warmup_epochs=10, batch_size=images, lr=1e-2, log_every=epochs)
    seconds, top1 = {}, {}
    for feature_cache in (True, False):
        torch.manual_seed(0)
        model = build_model("linear", model_name, CLASSES, pretrained=False)
        method = method_of(model)
        result = engine.train_and_evaluate(
            model, method.no_weight_decay(model), train, test, cfg, CPU, seed=1, feature_cache=feature_cache
        )
        seconds[feature_cache], top1[feature_cache] = result.train_seconds, result.top1
    return [
        f"### 2. Linear probing, {epochs} epochs ({model_name}, {images} images, batch {images})",
        "",
        "| path | training seconds | test top-1 |",
        "|---|---:|---:|",
        f"| backbone re-run every epoch (`feature_cache=False`) | {seconds[False]:.1f} | {top1[False]:.2f} |",
        f"| cached features (the engine's default: one backbone pass per image) | {seconds[True]:.2f} | {top1[True]:.2f} |",
        f"| **speed-up** | **{seconds[False] / seconds[True]:.1f}×** | same numbers |",
        "",
    ]


def inference_overhead(
    model_name: str = "vit_base_patch16_224",
    batch: int = 8,
    batches: int = 2,
    rounds: int = 5,
    methods: tuple[str, ...] = ("lora", "ssf", "rlrr", "vpt_deep", "adapter"),
) -> list[str]:
    inputs = torch.randn(batches, batch, 3, 224, 224)
    contenders: dict[str, Callable[[], None]] = {}

    def evaluation(model) -> Callable[[], None]:
        model.eval()

        @torch.no_grad()
        def run() -> None:
            for chunk in inputs:
                model(chunk)

        return run

    torch.manual_seed(0)
    contenders["plain backbone"] = evaluation(build_model("linear", model_name, CLASSES, pretrained=False))
    for name in methods:
        model = build_model(name, model_name, CLASSES, pretrained=False)
        contenders[name] = evaluation(model)
        if method_of(model).mergeable:
            contenders[f"{name} merged"] = evaluation(method_of(model).merge(model))
    seconds = median_seconds(contenders, rounds)
    plain = seconds["plain backbone"]
    lines = [
        f"### 3. Inference overhead over the plain backbone ({model_name}, batch {batch}, {batches} batches × {rounds} rounds)",
        "",
        "| method | unmerged img/s | overhead | merged img/s | overhead merged |",
        "|---|---:|---:|---:|---:|",
        f"| plain backbone | {batch * batches / plain:.2f} | — | — | — |",
    ]
    for name in methods:
        unmerged = seconds[name]
        merged = seconds.get(f"{name} merged")
        merged_cells = (
            f"{batch * batches / merged:.2f} | {merged / plain - 1:+.1%}"
            if merged is not None
            else "— | does not merge"
        )
        lines.append(f"| {name} | {batch * batches / unmerged:.2f} | {unmerged / plain - 1:+.1%} | {merged_cells} |")
    return lines + [""]


def rlrr_step_against_floor(model_name: str = "vit_base_patch16_224", batch: int = 4, rounds: int = 7) -> list[str]:
    inputs = torch.randn(batch, 3, 224, 224)
    labels = torch.arange(batch) % CLASSES

    def plain(trainable: Callable[[str], bool]):
        torch.manual_seed(0)
        model = build_model("linear", model_name, CLASSES, pretrained=False).train()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable(name))
        return model

    def backward_only(model) -> Callable[[], None]:
        def run() -> None:
            for parameter in model.parameters():
                parameter.grad = None
            F.cross_entropy(model(inputs), labels).backward()

        return run

    frozen = plain(lambda name: name == "pos_embed")  # the input gradient flows through every block
    floor = plain(lambda name: name.endswith(ADAPTED_LINEARS))
    torch.manual_seed(0)
    rlrr = build_model("rlrr", model_name, CLASSES, pretrained=False).train()
    optimizer = engine.build_optimizer(rlrr, method_of(rlrr).no_weight_decay(rlrr), TrainConfig(), CPU)

    def rlrr_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(rlrr(inputs), labels).backward()
        optimizer.step()

    seconds = median_seconds(
        {"frozen": backward_only(frozen), "floor": backward_only(floor), "rlrr": rlrr_step}, rounds
    )
    return [
        f"### 4. RLRR training step against its floor ({model_name}, batch {batch}, median of {rounds} rounds)",
        "",
        "| step | seconds | × frozen | × floor |",
        "|---|---:|---:|---:|",
        f"| frozen backbone, backward through every block | {seconds['frozen']:.3f} | 1.00 | — |",
        f"| floor: + weight gradients of qkv, proj, fc1, fc2 | {seconds['floor']:.3f} | {seconds['floor'] / seconds['frozen']:.2f} | 1.00 |",
        f"| peftbench `rlrr` (forward, backward, AdamW step) | {seconds['rlrr']:.3f} | {seconds['rlrr'] / seconds['frozen']:.2f} | **{seconds['rlrr'] / seconds['floor']:.3f}** |",
        "",
    ]


def cache_build_against_warm(images: int = 1000) -> list[str]:
    """A VTAB-1k-layout split of `images` JPEGs of mixed sizes (as dtd, flowers, pets): build, then open."""
    suite = get_suite("vtab")
    task = suite.task("dtd")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "vtab-1k"
        (root / "dtd" / "images").mkdir(parents=True)
        lines = []
        for i in range(images):
            height, width = int(rng.integers(300, 500)), int(rng.integers(300, 500))
            ramp = np.linspace(0, 255, width)[None, :, None] * rng.random(3)
            pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "dtd" / "images" / f"{i:06d}.jpg", quality=90)
            lines.append(f"images/{i:06d}.jpg {i % task.num_classes}")
        (root / "dtd" / "train800val200.txt").write_text("\n".join(lines) + "\n")
        cache = Path(folder) / "cache"
        seconds = {}
        for attempt in ("build", "warm"):
            started = time.perf_counter()
            split = load_split(suite, task, "train800val200", root, 224, RECIPE, cache)
            seconds[attempt] = time.perf_counter() - started
            assert split.built == (attempt == "build")
    return [
        f"### 5. Decode-once cache ({images} JPEGs of 300–499 px, VTAB-1k layout, resized to 224 by PIL)",
        "",
        "| step | seconds | images/s |",
        "|---|---:|---:|",
        f"| build: decode, resize, write, fingerprint | {seconds['build']:.2f} | {images / seconds['build']:,.0f} |",
        f"| warm: open the entry again (memory-mapped, size and sampled-checksum check) | {seconds['warm']:.3f} | {images / seconds['warm']:,.0f} |",
        "",
    ]


SECTIONS = {
    "harness": harness_against_bare,
    "linear": linear_probe_cached_against_rerun,
    "inference": inference_overhead,
    "rlrr": rlrr_step_against_floor,
    "cache": cache_build_against_warm,
}


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section '{unknown[0]}'; valid sections: {', '.join(SECTIONS)}")
    print(
        f"Machine: {provenance.device_name(CPU)}; torch {torch.__version__}; timm {provenance.versions()['timm']}; "
        f"peftbench {provenance.git_commit() or provenance.versions()['peftbench']}\n"
    )
    for name in names or ["harness", "linear", "inference", "rlrr"]:
        started = time.perf_counter()
        print("\n".join(SECTIONS[name]()))
        print(f"_({time.perf_counter() - started:.0f} s)_\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
