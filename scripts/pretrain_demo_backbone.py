"""Pre-train `vit_micro_patch4_32` on the generated upstream task and ship its weights.

The upstream task (peftbench.data.scenes) labels many attributes of each generated scene at once
(background texture, colours, object count, shape, position, size, orientation, noise), so the
frozen features carry what the demo tasks need. The script then linear-probes every demo task
with the new weights and with random initialisation, through the same code path as
`peftbench run --method linear --suite demo`, and writes both next to the weights.

    python scripts/pretrain_demo_backbone.py            # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from peftbench import backbone
from peftbench.data.scenes import UPSTREAM_ATTRIBUTES, render_upstream
from peftbench.engine import Normalise, learning_rate, seed_everything
from peftbench.settings import TrainConfig
from peftbench.store import Store
from peftbench.suites import get_suite
from peftbench.sweeps.launch import InProcess, execute
from peftbench.sweeps.request import RunRequest
from peftbench.sweeps.work import SweepListener


class MultiAttributeModel(nn.Module):
    """The backbone with one linear head per upstream attribute (the heads are not shipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model("vit_micro_patch4_32", num_classes=0)
        self.heads = nn.Linear(self.backbone.num_features, sum(UPSTREAM_ATTRIBUTES.values()))
        self.normalise = Normalise(*backbone.normalisation(self.backbone))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        logits = self.heads(self.backbone(self.normalise(images)))
        return list(logits.split(list(UPSTREAM_ATTRIBUTES.values()), dim=1))


def pretrain(args: argparse.Namespace) -> dict[str, float]:
    seed_everything(args.seed)
    started = time.perf_counter()
    images, labels = render_upstream(args.images, seed=args.seed)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    print(f"rendered {len(images)} upstream scenes in {time.perf_counter() - started:.0f} s", flush=True)
    model = MultiAttributeModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(images) / args.batch_size)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5)
    step = 0
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(images))
        correct = torch.zeros(len(UPSTREAM_ATTRIBUTES))
        seen = 0
        for start in range(0, len(images), args.batch_size):
            index = order[start : start + args.batch_size]
            batch, target = images[index], labels[index]
            if args.shift:  # small random translations; positions are coarse bins, so labels hold
                dx, dy = torch.randint(-args.shift, args.shift + 1, (2,)).tolist()
                batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps_per_epoch, cfg)
            outputs = model(batch)
            loss = sum(nn.functional.cross_entropy(out, target[:, i]) for i, out in enumerate(outputs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                correct += torch.stack([(out.argmax(1) == target[:, i]).sum() for i, out in enumerate(outputs)]).float()
                seen += len(index)
            if step % 50 == 0:
                print(
                    f"epoch {epoch + 1} step {step}/{args.epochs * steps_per_epoch} loss {loss.item():.3f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        accuracy = dict(zip(UPSTREAM_ATTRIBUTES, (100 * correct / seen).round(decimals=1).tolist()))
        print(f"epoch {epoch + 1} train accuracy per attribute: {accuracy}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
    save_file(state, str(args.out), metadata={"upstream_attributes": json.dumps(UPSTREAM_ATTRIBUTES)})
    return accuracy


class Quiet(SweepListener):
    def run_finished(self, unit, record) -> None:
        top1 = record.metrics.top1 if record.ok else record.reason
        print(f"  probe {unit.spec.task:<10} weights={unit.spec.weights[:12]:<12} top-1 {top1}", flush=True)


def linear_probes(weights: Path | None, data_root: Path) -> dict[str, float]:
    """Linear-probe top-1 per demo task, as `peftbench run --method linear --suite demo` does."""
    suite = get_suite("demo")
    with tempfile.TemporaryDirectory() as results:
        request = RunRequest(
            suite, list(suite.tasks), ["linear"], suite.model, weights, [42], {}, data_root, device="cpu"
        )
        outcome = execute(request, Store(Path(results)), InProcess(lambda units: contextlib.nullcontext(Quiet())))
        if outcome.failed:
            sys.exit(f"probe failed: {outcome.failed}")
        return {r.spec.task: round(r.metrics.top1, 1) for r in Store(Path(results)).records()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000, help="upstream scenes rendered once")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--shift", type=int, default=2, help="max random translation in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="where the demo suite is generated")
    parser.add_argument("--out", type=Path, default=backbone.DEMO_WEIGHTS)
    parser.add_argument("--probe-only", action="store_true", help="re-run the linear probes of existing weights")
    args = parser.parse_args()
    summary_path = args.out.with_suffix(".json")
    command = "python " + " ".join(sys.argv)
    if args.probe_only:
        summary = json.loads(summary_path.read_text())
        summary["probe_command"] = command
    else:
        started = time.perf_counter()
        upstream_accuracy = pretrain(args)
        summary = {
            "command": command,
            "pretraining_minutes": round((time.perf_counter() - started) / 60, 1),
            "threads": torch.get_num_threads(),
            "upstream_final_epoch_train_accuracy": upstream_accuracy,
        }
    pretrained = linear_probes(args.out, args.data_root)
    random_init = linear_probes(None, args.data_root)
    summary |= {
        "sha256": backbone.file_sha256(args.out),
        "linear_probe_top1": {"shipped_weights": pretrained, "random_init": random_init},
        "linear_probe_mean": {
            "shipped_weights": round(sum(pretrained.values()) / len(pretrained), 1),
            "random_init": round(sum(random_init.values()) / len(random_init), 1),
        },
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
