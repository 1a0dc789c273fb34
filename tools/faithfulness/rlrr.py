"""peftbench's `rlrr` and its `--protocol paper` recipe, run beside the authors' released code.

    git clone https://github.com/zstarN70/RLRR && git -C RLRR checkout 287c772fa71d56d95016112b5170ed8c7af259a0
    pip install ml_collections torchvision scipy      # what the authors' modules import
    python tools/faithfulness/rlrr.py --source RLRR [--out rlrr.md]

Nothing of theirs is copied here: their modules are imported from --source and run unchanged
(models/networks.py RLRRVisionTransformer, train_vtab.py get_args_parser/frozen_param/train,
RLRRDatasets VTABConfig/FGVCConfig/VTABDataLoader/fgvc_tranforms, and the timm scheduler they call).
Checks, at a small width (32 px, patch 4, width 64, 2 blocks) with the same frozen weights and the
same trainable values on both sides:
- published settings: our tasks/paper rows against their DATA_CONFIGS (lr, weight decay, drop path,
  batch, min lr, warm-up lr) for the 19 VTAB-1k and 5 FGVC tasks;
- learning rate: the lr of every epoch (constant within an epoch in both) of our paper recipe against
  their `create_scheduler(args)` stepped as their main loops step it, on every task;
- module: logits and every gradient in fp64, trainable sets and counts, weight-decay groups, and the
  init distributions (two-sample Kolmogorov-Smirnov on a width-256 model);
- preprocessing: rlrr-fgvc and the VTAB recipe against their transforms on the same JPEGs;
- ten aligned training steps: our engine's `fit` against their `train()` with their scheduler and
  AdamW groups on the same batches (fp32 on the CPU, where their autocast and NativeScaler are no-ops).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import (
    Report,
    agreement,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    paper_config,
    parse_args,
    source_commit,
    source_link,
    vit_config,
)
from PIL import Image
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone, engine
from peftbench.api import adapt
from peftbench.data.batches import BatchMaker
from peftbench.data.images import decode_for_recipe
from peftbench.data.loading import SplitData
from peftbench.data.recipes import RECIPES
from peftbench.methods.rlrr import RLRR
from peftbench.schedules import lr_per_epoch
from peftbench.suites import get_suite

CLONE, COMMIT = "https://github.com/zstarN70/RLRR", "287c772fa71d56d95016112b5170ed8c7af259a0"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES = 64, 2, 2, 32, 4, 10
CPU = torch.device("cpu")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")  # their torch.cuda.amp calls warn on a CPU-only machine


# ------------------------------------------------------------------------------------------- models


def their_config(width: int = WIDTH, depth: int = DEPTH):
    return vit_config(width, depth, HEADS, PATCH, 0.0)


def models(width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    """Ours (timm ViT + peftbench's RLRR, zero head) and theirs (RLRRVisionTransformer, zero_head, their
    frozen_param(['head', 'scale', 'shift']) as train_vtab.setup), each with its own init."""
    import train_vtab
    from models.networks import RLRRVisionTransformer

    torch.manual_seed(seed)
    ours = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                             mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    backbone.reset_head(ours, CLASSES)
    adapt(ours, RLRR())
    torch.manual_seed(seed + 1)
    theirs = RLRRVisionTransformer(their_config(width, depth), IMAGE, num_classes=CLASSES, zero_head=True)
    torch.nn.init.zeros_(theirs.head.weight)
    torch.nn.init.zeros_(theirs.head.bias)
    train_vtab.args = argparse.Namespace()  # frozen_param prints the script's global args
    train_vtab.frozen_param(theirs, ["head", "scale", "shift"])
    return ours, theirs


def frozen_pairs(ours, theirs, width: int = WIDTH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(our tensor, their tensor) of every frozen weight; q, k and v are row slices of timm's fused qkv."""
    emb, enc = theirs.transformer.embeddings, theirs.transformer.encoder
    pairs = [(ours.patch_embed.proj.layer.weight, emb.patch_embeddings.weight),
             (ours.patch_embed.proj.layer.bias, emb.patch_embeddings.bias), (ours.pos_embed, emb.position_embeddings),
             (ours.cls_token, emb.cls_token), (ours.norm.layer.weight, enc.encoder_norm.weight),
             (ours.norm.layer.bias, enc.encoder_norm.bias)]  # fmt: skip
    for ob, tb in zip(ours.blocks, enc.layer):
        pairs += [(ob.norm1.layer.weight, tb.attention_norm.weight), (ob.norm1.layer.bias, tb.attention_norm.bias),
                  (ob.norm2.layer.weight, tb.ffn_norm.weight), (ob.norm2.layer.bias, tb.ffn_norm.bias)]  # fmt: skip
        for g, unit in enumerate((tb.attn.query, tb.attn.key, tb.attn.value)):
            rows = slice(g * width, (g + 1) * width)
            pairs += [(ob.attn.qkv.layer.weight[rows], unit.mlp.weight), (ob.attn.qkv.layer.bias[rows], unit.mlp.bias)]
        for mine, unit in ((ob.attn.proj, tb.attn.out), (ob.mlp.fc1, tb.ffn.fc1), (ob.mlp.fc2, tb.ffn.fc2)):
            pairs += [(mine.layer.weight, unit.mlp.weight), (mine.layer.bias, unit.mlp.bias)]
    return pairs


def trainable_pairs(
    ours, theirs, width: int = WIDTH
) -> list[tuple[str, torch.nn.Parameter, slice, torch.nn.Parameter]]:
    """(label, our parameter, rows of it, their parameter) for every trainable value, covering both sides."""
    emb, enc = theirs.transformer.embeddings, theirs.transformer.encoder
    whole = slice(None)
    pairs = [("patch ssf scale", ours.patch_embed.proj.ssf.scale, whole, emb.ssf_scale_patch),
             ("patch ssf shift", ours.patch_embed.proj.ssf.shift, whole, emb.ssf_shift_patch),
             ("final norm ssf scale", ours.norm.ssf.scale, whole, enc.ssf_scale_enc_norm),
             ("final norm ssf shift", ours.norm.ssf.shift, whole, enc.ssf_shift_enc_norm),
             ("head weight", ours.head.weight, whole, theirs.head.weight),
             ("head bias", ours.head.bias, whole, theirs.head.bias)]  # fmt: skip
    for i, (ob, tb) in enumerate(zip(ours.blocks, enc.layer)):
        pairs += [(f"block {i} norm1 ssf scale", ob.norm1.ssf.scale, whole, tb.ssf_scale_attn_norm),
                  (f"block {i} norm1 ssf shift", ob.norm1.ssf.shift, whole, tb.ssf_shift_attn_norm),
                  (f"block {i} norm2 ssf scale", ob.norm2.ssf.scale, whole, tb.ssf_scale_ffn_norm),
                  (f"block {i} norm2 ssf shift", ob.norm2.ssf.shift, whole, tb.ssf_shift_ffn_norm)]  # fmt: skip
        for g, (name, unit) in enumerate(zip("qkv", (tb.attn.query, tb.attn.key, tb.attn.value))):
            rows, qkv = slice(g * width, (g + 1) * width), ob.attn.qkv
            pairs += [(f"block {i} {name} s_in", qkv.s_in, slice(g, g + 1), unit.scale_col),
                      (f"block {i} {name} s_out", qkv.s_out, rows, unit.scale_line),
                      (f"block {i} {name} f", qkv.bias_shift, rows, unit.shift_bias)]  # fmt: skip
        for name, mine, unit in (("proj", ob.attn.proj, tb.attn.out), ("fc1", ob.mlp.fc1, tb.ffn.fc1),
                                 ("fc2", ob.mlp.fc2, tb.ffn.fc2)):  # fmt: skip
            pairs += [(f"block {i} {name} s_in", mine.s_in, whole, unit.scale_col),
                      (f"block {i} {name} s_out", mine.s_out, whole, unit.scale_line),
                      (f"block {i} {name} f", mine.bias_shift, whole, unit.shift_bias)]  # fmt: skip
    return pairs


@torch.no_grad()
def share_values(ours, theirs) -> None:
    """Theirs takes our frozen weights and our trainable values (random, so that nothing sits at zero)."""
    generator = torch.Generator().manual_seed(7)
    for mine, their in frozen_pairs(ours, theirs):
        their.copy_(mine.reshape(their.shape))
    for label, mine, rows, their in trainable_pairs(ours, theirs):
        values = torch.randn(mine[rows].shape, generator=generator, dtype=mine.dtype) * 0.05
        mine[rows] = values + (1.0 if "ssf scale" in label else 0.0)
        their.copy_(mine[rows].reshape(their.shape))


# ------------------------------------------------------------------------------------------- checks


def check_settings(report: Report) -> None:
    from RLRRDatasets.FGVCConfig import DATA_CONFIGS as FGVC
    from RLRRDatasets.VTABConfig import DATA_CONFIGS as VTAB

    for suite, configs in (("vtab1k", VTAB), ("fgvc", FGVC)):
        chosen, differ = get_suite(suite), []
        for task in chosen.tasks:
            config = configs[_their_name(suite, task.name)]
            ours = paper_config("rlrr", suite, task.name)
            names = ["lr", "weight_decay", "drop_path", "batch_size", "min_lr", "warmup_lr"]
            if ours.schedule == "cosine-restarts":  # train_fgvc.py's restarts (eta_min 0) leave min_lr unused
                names.remove("min_lr")
            if [getattr(ours, n) for n in names] != [config[n] for n in names]:
                differ.append(task.name)
        report.check(f"{suite} settings equal to their *Config.py (lr, wd, drop path, batch, min/warm-up lr)",
                     agreement(differ, len(chosen.tasks)),
                     "all", not differ)  # fmt: skip


def _their_name(suite: str, task: str) -> str:
    """Their config keys are VTAB-1k's folder names (cifar, oxford_iiit_pet, ...) and the FGVC folders."""
    return task


def their_loop(suite: str, task: str, optimizer_groups, epochs=None, warmup=None, cooldown=None):
    """Their script, its args (parser defaults + the task's config, as their main() sets them), an AdamW
    over `optimizer_groups` at the task's lr, the scheduler their main() builds (timm's create_scheduler,
    replaced by CosineAnnealingWarmRestarts for CUB and Dogs in train_fgvc.py) and its epoch count."""
    import train_fgvc
    import train_vtab
    from RLRRDatasets.FGVCConfig import DATA_CONFIGS as FGVC
    from RLRRDatasets.VTABConfig import DATA_CONFIGS as VTAB
    from timm.scheduler import create_scheduler

    script, config = (train_vtab, VTAB[task]) if suite == "vtab1k" else (train_fgvc, FGVC[task])
    sys.argv = [script.__file__]
    args = script.get_args_parser()
    args.learning_rate, args.min_lr, args.warmup_lr = config["lr"], config["min_lr"], config["warmup_lr"]
    args.weight_decay = config["weight_decay"]
    for name, value in (("epochs", epochs), ("warmup_epochs", warmup), ("cooldown_epochs", cooldown)):
        if value is not None:
            setattr(args, name, value)
    optimizer = torch.optim.AdamW(optimizer_groups(args.learning_rate, args.weight_decay))
    scheduler, num_epochs = create_scheduler(args, optimizer)
    if task in ("CUB_200_2011", "StanfordDogs"):
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=5, T_mult=1, eta_min=0)
    return script, optimizer, scheduler, num_epochs


def their_lrs(suite: str, task: str) -> list[float]:
    """The lr every epoch of their main() trains at: read before the epoch, `scheduler.step(epoch)` after."""

    def groups(lr, weight_decay):
        return [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr, "weight_decay": weight_decay}]

    _, optimizer, scheduler, num_epochs = their_loop(suite, task, groups)
    lrs = []
    for epoch in range(num_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    return lrs


def check_schedules(report: Report) -> None:
    for suite in ("vtab1k", "fgvc"):
        worst, named = 0.0, {}
        for task in get_suite(suite).tasks:
            difference = max_relative(lr_per_epoch(paper_config("rlrr", suite, task.name)), their_lrs(suite, task.name))
            worst = max(worst, difference)
            named[task.name] = difference
        for task in ("cifar", "dtd") if suite == "vtab1k" else ("CUB_200_2011", "OxfordFlowers"):
            report.check(f"lr of every epoch, {task} (paper recipe vs their scheduler), max relative difference",
                         named[task], "1e-9", named[task] <= 1e-9)  # fmt: skip
        report.check(f"lr of every epoch, all {len(named)} {suite} tasks, max relative difference", worst, "1e-9",
                     worst <= 1e-9)  # fmt: skip


def check_module(report: Report) -> None:
    ours, theirs = models()
    share_values(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    logits_then_backward(report, ours, theirs, IMAGE, "")
    pairs = trainable_pairs(ours, theirs)
    worst = max(max_abs(mine.grad[rows].reshape(their.shape), their.grad) for _, mine, rows, their in pairs)
    report.check(f"gradients of all {len(pairs)} trainable tensors, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    count_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    count_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    covered = {id(p) for _, p, _, _ in pairs} == {id(p) for p in ours.parameters() if p.requires_grad} and {
        id(t) for *_, t in pairs} == {id(p) for p in theirs.parameters() if p.requires_grad}  # fmt: skip
    report.check("trainable parameters (same tensors on both sides; count ours / theirs)",
                 f"{count_ours:,} / {count_theirs:,}", "equal", covered and count_ours == count_theirs)  # fmt: skip
    names = {id(p): n for n, p in ours.named_parameters()}
    no_decay = RLRR().no_weight_decay(ours)
    their_decayed = {id(p) for p in theirs.get_parameters(lr=1.0, weight_decay=1.0)[0]["params"]}
    split = [(names[id(mine)] not in no_decay) == (id(their) in their_decayed) for _, mine, _, their in pairs]
    report.check("weight-decay group of every trainable tensor (ours vs their get_parameters)",
                 f"{sum(split)}/{len(split)}", "all", all(split))  # fmt: skip


def check_init(report: Report) -> None:
    """Our init and theirs as distributions: two fresh models each (different seeds), values pooled by kind."""
    ours, theirs = models(width=256, depth=1, seed=11)
    pools: dict[str, tuple[list, list]] = {}
    for label, mine, rows, their in trainable_pairs(ours, theirs, width=256):
        kind = next(
            (k for k in ("s_in", "s_out", "ssf scale", "ssf shift") if k in label), "f" if label.endswith(" f") else ""
        )
        if kind:  # the head is zero on both sides (checked with the module)
            a, b = pools.setdefault(kind, ([], []))
            a.append(mine.detach()[rows].flatten())
            b.append(their.detach().flatten())
    for kind, (a, b) in sorted(pools.items()):
        a, b = torch.cat(a), torch.cat(b)
        if a.std() == 0 and b.std() == 0:
            report.check(f"init of {kind}: constant", f"{a[0].item():g} / {b[0].item():g}", "equal", torch.equal(a, b))
            continue
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"init of {kind} ({a.numel():,} / {b.numel():,} values): two-sample KS p-value", float(p_value),
                     "> 0.01", p_value > 0.01)  # fmt: skip


def jpegs(folder: Path) -> list[Path]:
    """Six photos-like JPEGs of varied sizes (gradients + noise), written as a user's files are."""
    rng, paths = np.random.default_rng(0), []
    for i, (w, h) in enumerate([(300, 200), (500, 375), (256, 256), (224, 300), (640, 480), (120, 90)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
        image = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
    return paths


def ours_inputs(paths: list[Path], recipe_name: str, size: int) -> torch.Tensor:
    """Our eval inputs: the decode-once decoding, the device-side crop, normalisation."""
    recipe = RECIPES[recipe_name]
    decoded = torch.from_numpy(np.ascontiguousarray(decode_for_recipe(paths, recipe, size)))
    split = SplitData(decoded, torch.zeros(len(paths), dtype=torch.long))
    images = BatchMaker(split, recipe, size, CPU, train=False)(torch.arange(len(paths)))
    return engine.Normalise(*recipe.mean_std)(images)


def check_preprocessing(report: Report) -> None:
    import torchvision as tv
    from RLRRDatasets.fgvc_tranforms import get_transforms
    from RLRRDatasets.VTABDataLoader import get_data

    with tempfile.TemporaryDirectory() as folder:
        paths = jpegs(Path(folder))
        theirs = torch.stack([get_transforms("test", 224)(Image.open(p).convert("RGB")) for p in paths])
        difference = max_abs(ours_inputs(paths, "rlrr-fgvc", 224), theirs)
        report.check("rlrr-fgvc test inputs vs their fgvc_tranforms (Resize((256, 256)), CenterCrop, 0.5/0.5)",
                     difference, "1e-6", difference <= 1e-6)  # fmt: skip
        resized = np.stack([np.asarray(tv.transforms.Resize((256, 256))(Image.open(p).convert("RGB"))) for p in paths])
        cached = decode_for_recipe(paths, RECIPES["rlrr-fgvc"], 224).transpose(0, 2, 3, 1)
        grey = int(np.abs(resized.astype(int) - cached.astype(int)).max())
        report.check("rlrr-fgvc cached 256 x 256 images vs their Resize((256, 256)), grey levels", str(grey), "0",
                     grey == 0)  # fmt: skip
        lists = "\n".join(f"{p.name} 0" for p in paths) + "\n"
        for name in ("train800val200.txt", "test.txt"):
            Path(folder, name).write_text(lists)
        _, test_loader = get_data(data_path=folder, batch_size=len(paths))
        theirs = torch.stack([test_loader.dataset[i][0] for i in range(len(paths))])
        difference = max_abs(ours_inputs(paths, "vtab-resize-half", 224), theirs)
        report.check("vtab-resize-half inputs vs their VTABDataLoader (bicubic Resize((224, 224)), 0.5/0.5)",
                     difference, "1e-6", difference <= 1e-6)  # fmt: skip


class Losses(engine.SilentListener):
    def __init__(self):
        self.values: list[float] = []

    def advance(self, steps: int, epoch: int, loss: float | None) -> None:
        self.values.append(loss)


class RecordingLoss(torch.nn.CrossEntropyLoss):
    def __init__(self):
        super().__init__()
        self.values: list[float] = []

    def forward(self, logits, target):
        loss = super().forward(logits, target)
        self.values.append(loss.item())
        return loss


ALIGNED = (("vtab1k", "cifar"), ("vtab1k", "dtd"), ("fgvc", "CUB_200_2011"), ("fgvc", "OxfordFlowers"))


def check_aligned_steps(report: Report) -> None:
    """Ten steps per task (10 epochs x one batch of 8: epochs 8 + cool-down 2, warm-up 2 where the recipe
    warms up, the task's lr and weight decay, drop path 0 so that no random mask differs) of our engine's
    fit and their train() with their AdamW groups and scheduler, on the same batches."""
    from timm.utils import NativeScaler

    for suite, task in ALIGNED:
        base = paper_config("rlrr", suite, task)
        cfg = dataclasses.replace(base, epochs=8, cooldown_epochs=2, warmup_epochs=2 if base.warmup_epochs else 0,
                                  drop_path=0.0, batch_size=8, precision="fp32", log_every=1)  # fmt: skip
        ours, theirs = models()
        share_values(ours, theirs)
        generator = torch.Generator().manual_seed(5)
        images = torch.randn(8, 3, IMAGE, IMAGE, generator=generator)
        labels = torch.randint(0, CLASSES, (8,), generator=generator)

        losses = Losses()
        ours.train()
        engine.fit(ours, engine.build_optimizer(ours, RLRR().no_weight_decay(ours), cfg, CPU), images.__getitem__,
                   labels, cfg, CPU, losses)  # fmt: skip

        script, optimizer, scheduler, num_epochs = their_loop(
            suite, task, theirs.get_parameters, 8, cfg.warmup_epochs, 2
        )
        script.device = CPU
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
        criterion, scaler = RecordingLoss(), NativeScaler()
        restarts = task in ("CUB_200_2011", "StanfordDogs")  # train_fgvc.py hands train() no scheduler then
        for epoch in range(num_epochs):  # their main(): train an epoch, then lr_scheduler.step(epoch)
            script.train(theirs, loader, criterion, optimizer, scaler, None if restarts else scheduler, epoch)
            scheduler.step(epoch)

        steps = (len(losses.values), len(criterion.values))
        difference = max(abs(a - b) for a, b in zip(losses.values, criterion.values))
        report.check(f"{task}: losses of ten aligned training steps (ours / theirs: {steps[0]} / {steps[1]} steps), "
                     "max abs difference", difference, "1e-5", steps == (10, 10) and difference <= 1e-5)  # fmt: skip
        # A bias added to every key leaves the softmax unchanged: the key bias shifts' true gradient is 0, so
        # AdamW (which divides by sqrt(v)) turns either code's round-off there into lr-sized steps.
        pairs = trainable_pairs(ours, theirs)
        rest = [pair for pair in pairs if not pair[0].endswith(" k f")]
        drift = max(max_abs(mine[rows].reshape(their.shape), their) for _, mine, rows, their in rest)
        report.check(f"{task}: trainable values after them ({len(rest)} of {len(pairs)} tensors: all but the key bias "
                     "shifts, whose gradient is 0), max abs difference", drift, "1e-5", drift <= 1e-5)  # fmt: skip
        report.check(f"{task}: the ten steps train (first minus last loss)", losses.values[0] - losses.values[-1],
                     "> 0", losses.values[0] > losses.values[-1])  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("RLRR (Dong et al., CVPR 2024): `rlrr`, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "models/networks.py, train_vtab.py, train_fgvc.py, RLRRDatasets/{VTAB,FGVC}Config.py, "
                    "RLRRDatasets/VTABDataLoader.py, RLRRDatasets/fgvc_tranforms.py")  # fmt: skip
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for check in (check_settings, check_schedules, check_module, check_init, check_preprocessing, check_aligned_steps):
        check(report)
    finish(report, args)


if __name__ == "__main__":
    main()
