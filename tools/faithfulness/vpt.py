"""peftbench's `vpt_shallow` and `vpt_deep` run beside VPT's released code.

    git clone https://github.com/KMnP/vpt && git -C vpt checkout 4410440ec1b489f24f66b9fad3d9b10ff3443567
    pip install ml_collections simplejson termcolor iopath fvcore pyyaml    # what their modules import
    python tools/faithfulness/vpt.py --source vpt [--out vpt.md]

Their modules run unchanged: src/models/vit_prompt/vit.py (`PromptedVisionTransformer`, its prompt
init, `incorporate_prompt`, `forward_deep_prompt`, `train`) on src/models/vit_backbones/vit.py. A
small ViT configuration is added to their `CONFIGS` table (data, not code). Checks at a small width
with the same frozen weights and the same prompts: logits and every gradient in fp64, the training
forward with prompt dropout 0.1 (the same masks in the same order), trainable counts with their
trainable rule (src/models/vit_models.py: every parameter named "prompt", plus the head), and the
prompt init; and the schedule: our `vpt-epoch` against their make_scheduler as the trainer steps it.
VPT has no fixed published settings (`--protocol paper` refuses it; `tune` is VPT's own
protocol).
"""

from __future__ import annotations

import types
import warnings

import torch
from _common import (
    Report,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    parse_args,
    source_commit,
    source_link,
    vit_config,
)
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.vpt import VPTDeep, VPTShallow

CLONE, COMMIT = "https://github.com/KMnP/vpt", "4410440ec1b489f24f66b9fad3d9b10ff3443567"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES, TOKENS = 64, 3, 2, 32, 4, 10, 5


def tiny_config(width: int = WIDTH, depth: int = DEPTH):
    return vit_config(width, depth, HEADS, PATCH, 0.1)


def prompt_config(deep: bool, dropout: float):
    import ml_collections

    return ml_collections.ConfigDict({"LOCATION": "prepend", "INITIATION": "random", "NUM_DEEP_LAYERS": None,
                                      "DEEP_SHARED": False, "NUM_TOKENS": TOKENS, "DROPOUT": dropout, "PROJECT": -1,
                                      "DEEP": deep, "VIT_POOL_TYPE": "original"})  # fmt: skip


def models(deep: bool, dropout: float = 0.0, width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    from src.models.vit_backbones.vit import CONFIGS
    from src.models.vit_prompt.vit import PromptedVisionTransformer

    CONFIGS["kit-tiny"] = tiny_config(width, depth)
    torch.manual_seed(seed)
    ours = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                             mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    backbone.reset_head(ours, CLASSES)
    adapt(ours, (VPTDeep if deep else VPTShallow)(prompt_len=TOKENS, prompt_dropout=dropout))
    torch.manual_seed(seed + 1)
    theirs = PromptedVisionTransformer(prompt_config(deep, dropout), "kit-tiny", img_size=IMAGE, num_classes=CLASSES)
    for name, p in theirs.named_parameters():  # vit_models.py: only the prompts (and the head) train
        p.requires_grad_("prompt" in name or name.startswith("head"))
    return ours, theirs


def pairs(ours, theirs, deep: bool, width: int = WIDTH):
    """(label, our tensor, their tensor) for every parameter; q, k, v are row slices of timm's fused qkv."""
    t = theirs.transformer
    emb, enc = t.embeddings, t.encoder
    out = [("patch", ours.patch_embed.proj.weight, emb.patch_embeddings.weight),
           ("patch bias", ours.patch_embed.proj.bias, emb.patch_embeddings.bias),
           ("pos", ours.pos_embed, emb.position_embeddings), ("cls", ours.cls_token, emb.cls_token),
           ("norm", ours.norm.inner.weight if hasattr(ours.norm, "inner") else ours.norm.weight, enc.encoder_norm.weight),
           ("norm bias", ours.norm.inner.bias if hasattr(ours.norm, "inner") else ours.norm.bias, enc.encoder_norm.bias),
           ("head", ours.head.weight, theirs.head.weight), ("head bias", ours.head.bias, theirs.head.bias),
           ("prompts 0", ours.norm_pre.prompts, t.prompt_embeddings)]  # fmt: skip
    for i, (ob, tb) in enumerate(zip(ours.blocks, enc.layer)):
        block = getattr(ob, "block", ob)  # deep prompts wrap blocks 1..
        if deep and i > 0:
            out.append((f"prompts {i}", ob.prompts, t.deep_prompt_embeddings[i - 1 : i]))
        out += [(f"{i} norm1", block.norm1.weight, tb.attention_norm.weight), (f"{i} norm1 b", block.norm1.bias, tb.attention_norm.bias),
                (f"{i} norm2", block.norm2.weight, tb.ffn_norm.weight), (f"{i} norm2 b", block.norm2.bias, tb.ffn_norm.bias),
                (f"{i} proj", block.attn.proj.weight, tb.attn.out.weight), (f"{i} proj b", block.attn.proj.bias, tb.attn.out.bias),
                (f"{i} fc1", block.mlp.fc1.weight, tb.ffn.fc1.weight), (f"{i} fc1 b", block.mlp.fc1.bias, tb.ffn.fc1.bias),
                (f"{i} fc2", block.mlp.fc2.weight, tb.ffn.fc2.weight), (f"{i} fc2 b", block.mlp.fc2.bias, tb.ffn.fc2.bias)]  # fmt: skip
        for g, unit in enumerate((tb.attn.query, tb.attn.key, tb.attn.value)):
            rows = slice(g * width, (g + 1) * width)
            out += [(f"{i} qkv {g}", block.attn.qkv.weight[rows], unit.weight),
                    (f"{i} qkv {g} b", block.attn.qkv.bias[rows], unit.bias)]  # fmt: skip
    return out


@torch.no_grad()
def share_values(ours, theirs, deep: bool) -> None:
    generator = torch.Generator().manual_seed(7)
    ours.head.weight.copy_(torch.randn(ours.head.weight.shape, generator=generator) * 0.05)
    for _, mine, their in pairs(ours, theirs, deep):
        their.copy_(mine.reshape(their.shape))


def check_method(report: Report, deep: bool) -> None:
    name = "vpt_deep" if deep else "vpt_shallow"
    ours, theirs = models(deep)
    share_values(ours, theirs, deep)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = logits_then_backward(report, ours, theirs, IMAGE, f"{name}: ")
    trainable = [(label, m, t) for label, m, t in pairs(ours, theirs, deep) if label.startswith(("prompts", "head"))]
    worst = 0.0
    for label, m, t in trainable:
        mine_grad = m.grad
        their_grad = t.grad if t.grad is not None else theirs.transformer.deep_prompt_embeddings.grad[
            int(label.split()[1]) - 1 : int(label.split()[1])]  # fmt: skip
        worst = max(worst, max_abs(mine_grad.reshape(their_grad.shape), their_grad))
    report.check(f"{name}: gradients of the prompts and the head, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check(f"{name}: trainable parameters (ours / theirs)", f"{counts[0]:,} / {counts[1]:,}", "equal",
                 counts[0] == counts[1])  # fmt: skip

    ours, theirs = models(deep, dropout=0.1)
    share_values(ours, theirs, deep)
    ours, theirs = ours.double().train(), theirs.double().train()  # their train(): encoder in eval, prompts dropped
    torch.manual_seed(123)
    mine = ours(x)
    torch.manual_seed(123)
    their = theirs(x)
    difference = max_abs(mine, their)
    report.check(f"{name}: training forward with prompt dropout 0.1 (same masks), fp64, max abs difference",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip

    ours, theirs = models(deep, width=256, seed=11)
    found = [(m, t) for label, m, t in pairs(ours, theirs, deep, width=256) if label.startswith("prompts")]
    a = torch.cat([m.detach().flatten() for m, _ in found])
    b = torch.cat([t.detach().flatten() for _, t in found])
    p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
    report.check(f"{name}: init of the prompts ({a.numel():,} values): two-sample KS p-value", float(p_value), "> 0.01",
                 p_value > 0.01)  # fmt: skip


def check_schedule(report: Report, source) -> None:
    """Our vpt-epoch against their make_scheduler (configs/base-prompt.yaml's SOLVER), stepped once after
    each epoch as src/engine/trainer.py does."""
    import yaml
    from src.solver.lr_scheduler import make_scheduler

    from peftbench.methods import get_method
    from peftbench.schedules import lr_per_epoch
    from peftbench.settings import resolve
    from peftbench.suites import get_suite

    solver = yaml.safe_load((source / "configs" / "base-prompt.yaml").read_text())["SOLVER"]
    params = types.SimpleNamespace(WARMUP_EPOCH=solver["WARMUP_EPOCH"], TOTAL_EPOCH=solver["TOTAL_EPOCH"],
                                   SCHEDULER=solver["SCHEDULER"])  # fmt: skip
    for method in ("vpt_shallow", "vpt_deep"):
        cfg, _ = resolve(get_method(method), get_suite("vtab1k").defaults, {})
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        scheduler, theirs = make_scheduler(optimizer, params), []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(solver["TOTAL_EPOCH"]):
                theirs.append(optimizer.param_groups[0]["lr"])
                scheduler.step()
        difference = max_relative(lr_per_epoch(cfg), theirs) if cfg.total_epochs == len(theirs) else float("inf")
        worst = max(abs(a - b) for a, b in zip(lr_per_epoch(cfg), theirs))
        report.check(f"{method}: lr of every epoch (defaults: {cfg.scheduler}, {cfg.epochs} epochs, warm-up "
                     f"{cfg.warmup_epochs}) vs their make_scheduler, max abs difference / lr", worst / cfg.lr, "1e-12",
                     difference != float("inf") and worst / cfg.lr <= 1e-12)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("VPT (Jia et al., ECCV 2022): `vpt_shallow`, `vpt_deep`",
                    source_link(CLONE, COMMIT, commit),
                    "src/models/vit_prompt/vit.py, src/models/vit_backbones/vit.py, src/models/vit_models.py (rule), "
                    "src/solver/lr_scheduler.py, configs/base-prompt.yaml")  # fmt: skip
    for deep in (False, True):
        check_method(report, deep)
    check_schedule(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
