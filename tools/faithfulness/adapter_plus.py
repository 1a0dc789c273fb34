"""peftbench's `adapter_plus` run beside Adapter+'s released code.

    git clone https://github.com/visinf/adapter_plus && git -C adapter_plus checkout 191c4ab26fc97ea09ae390383ff79327822853ff
    python tools/faithfulness/adapter_plus.py --source adapter_plus [--out adapter_plus.md]

Their module runs unchanged: adapter_plus/vit_adapter.py (`VisionTransformerAdapter`, `AdapterBlock`,
`Adapter`), built with conf/adapter/adapter_plus.yaml over base_adapter.yaml (post position, channel
scaling, no norm, Houlsby init, dropout 0, drop path 0.1) at d = 8 (conf/experiment/vtab/adapter_plus_dim8.yaml),
the config passed as an attribute namespace, as Hydra's DictConfig is read. Trainable: their rule, names
with "adapter" or "head" (modeling/adaptermodel.py). Checks at a small width with the same weights:
logits and every gradient in fp64, the training forward with the ViT's drop path 0.5 and the adapter's
0.1 (same masks in the same order), the ViT-B/16 trainable count, the inits. The `--protocol paper`
recipe: the configs' values (read from their YAML files), the lr of every epoch from their
modeling/lr_scheduler.py run unchanged and stepped as their `lr_scheduler_step` is called by Lightning
2.3.3 (environment.yml): `scheduler.step(epoch=self.current_epoch)` at the end of each training epoch,
where `current_epoch` is still the epoch that just finished (lightning/pytorch/loops/fit_loop.py,
`on_advance_end`: `update_lr_schedulers("epoch")` runs before `epoch_progress.increment_completed()`),
and the head's init (timm's, on the head the pretrained checkpoint does not replace).
"""

from __future__ import annotations

import inspect
import sys
import warnings
from types import SimpleNamespace

import torch
from _common import (
    Report,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    paper_config,
    parity_inputs,
    parse_args,
    same_masks_difference,
    source_commit,
    source_link,
)
from _common import share_values as share
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench.api import adapt
from peftbench.methods.adapter_plus import AdapterPlus
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published

CLONE, COMMIT = "https://github.com/visinf/adapter_plus", "191c4ab26fc97ea09ae390383ff79327822853ff"
CLASSES = 10
ADAPTER_PLUS = SimpleNamespace(config="post", scaling="channel", act_layer=True, norm_layer=False, bias=True,
                               init="houlsby", dim=8, attn_adapter=False, dropout=0, drop_path=0.1)  # fmt: skip
warnings.filterwarnings("ignore")


def tolerant(block_cls):
    """`block_fn` for timm's own first build of the blocks, which their __init__ then discards and builds
    again with its own arguments: today's timm passes arguments their AdapterBlock predates
    (scale_attn_norm, proj_bias, ...), which are left out of that first, discarded build."""
    known = inspect.signature(block_cls.__init__).parameters

    def build(**kwargs):
        return block_cls(**{k: v for k, v in kwargs.items() if k in known})

    return build


def models(width=64, depth=2, heads=2, image=32, patch=4, drop_path=0.0, seed=0):
    from adapter_plus.vit_adapter import AdapterBlock, VisionTransformerAdapter

    shape = dict(img_size=image, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads, num_classes=CLASSES,
                 drop_path_rate=drop_path)  # fmt: skip
    torch.manual_seed(seed)
    ours = VisionTransformer(**shape)
    torch.manual_seed(seed + 1)
    theirs = VisionTransformerAdapter(**shape, adapter_config=ADAPTER_PLUS, block_fn=tolerant(AdapterBlock))
    theirs.load_state_dict(ours.state_dict(), strict=False)  # the same backbone; their adapters stay as built
    for name, p in theirs.named_parameters():
        p.requires_grad_("adapter" in name or "head" in name)
    # today's timm forward passes forward_features arguments their subclass predates
    theirs.forward = lambda x: theirs.forward_head(theirs.forward_features(x))
    torch.manual_seed(seed + 2)
    adapt(ours, AdapterPlus())
    return ours, theirs


def their_name(name: str) -> str:
    for mine, theirs in ((".norm2.norm.", ".norm2."), (".drop_path2.adapter.down.", ".adapter.bottleneck.1."),
                         (".drop_path2.adapter.up.", ".adapter.bottleneck.4."), (".drop_path2.scaling", ".adapter.scaling")):  # fmt: skip
        name = name.replace(mine, theirs)
    return name


def pairs(ours, theirs):
    their = dict(theirs.named_parameters())
    return [(n, p, their[their_name(n)]) for n, p in ours.named_parameters()]


def check(report: Report) -> None:
    ours, theirs = models()
    share(pairs(ours, theirs))
    ours, theirs = ours.double().eval(), theirs.double().eval()
    logits_then_backward(report, ours, theirs, 32)
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
    worst = max(max_abs(m.grad, t.grad) for _, m, t in trainable)
    report.check(f"gradients of all {len(trainable)} trainable tensors, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    same = all(m.requires_grad == t.requires_grad for _, m, t in pairs(ours, theirs))
    report.check("the same tensors train on both sides", same, "True", same)

    ours, theirs = models(drop_path=0.5)
    share(pairs(ours, theirs))
    ours, theirs = ours.double().train(), theirs.double().train()
    x = parity_inputs(32)
    difference = same_masks_difference(lambda: ours(x), lambda: theirs(x))
    report.check("training forward with the ViT's drop path 0.5 and the adapter's 0.1 (same masks), fp64, max abs "
                 "difference", difference, "1e-10", difference <= 1e-10)  # fmt: skip

    big_ours, big_theirs = models(width=768, depth=12, heads=12, image=224, patch=16, seed=5)
    counts = [sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head"))
              for m in (big_ours, big_theirs)]  # fmt: skip
    report.check("trainable parameters on ViT-B/16 without the head (ours / theirs)", f"{counts[0]:,} / {counts[1]:,}",
                 "equal", counts[0] == counts[1])  # fmt: skip
    found = pairs(big_ours, big_theirs)
    for part in ("down", "up"):
        a = torch.cat([m.detach().flatten() for n, m, _ in found if n.endswith(f"adapter.{part}.weight")])
        b = torch.cat([t.detach().flatten() for n, _, t in found if n.endswith(f"adapter.{part}.weight")])
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"init of {part}.weight ({a.numel():,} values): two-sample KS p-value", float(p_value), "> 0.01",
                     p_value > 0.01)  # fmt: skip
        cut = max(a.abs().max().item(), b.abs().max().item())
        report.check(f"init of {part}.weight: largest magnitude on either side (cut at ±0.02)", cut, "<= 0.02",
                     cut <= 0.02)  # fmt: skip
    start = all(bool((m == (1 if n.endswith("scaling") else 0)).all()) and torch.equal(m, t) for n, m, t in found
                if n.endswith(("adapter.down.bias", "adapter.up.bias", "scaling")))  # fmt: skip
    report.check("init of the biases (zero) and of the channel scale (ones), equal on both sides", "yes" if start else
                 "no", "yes", start)  # fmt: skip


def check_recipe(report: Report, source) -> None:
    import re

    import yaml

    from peftbench import backbone
    from peftbench.schedules import lr_per_epoch

    conf = source / "conf"
    train, optimizer = (
        yaml.safe_load((conf / f).read_text()) for f in ("train/default.yaml", "train/optimizer/adamw.yaml")
    )
    top, data, adapter, experiment = (yaml.safe_load((conf / f).read_text()) for f in
                                      ("config.yaml", "data/base_data.yaml", "adapter/base_adapter.yaml",
                                       "experiment/vtab/adapter_plus_dim8.yaml"))  # fmt: skip
    precision = re.search(r'precision="([^"]+)"', (source / "train.py").read_text()).group(1)
    ours = paper_config("adapter_plus", "vtab1k", "cifar")
    options = published("adapter_plus", get_suite("vtab1k"), get_suite("vtab1k").task("cifar")).settings
    mine = (ours.optimizer, ours.lr, ours.weight_decay, ours.batch_size, ours.epochs, ours.warmup_epochs, ours.warmup_lr,
            ours.min_lr, ours.drop_path, float(options["drop_path"]), int(options["dim"]), ours.precision)  # fmt: skip
    lr = float(optimizer["lr"])
    their = ("adamw" if optimizer["_target_"] == "torch.optim.AdamW" else optimizer["_target_"], lr,
             float(optimizer["weight_decay"]), data["batch_size"], train["epochs"], train["warmup"],
             lr / train["lr_start_factor"], lr / train["lr_factor"], top["vit"]["drop_path"], adapter["drop_path"],
             experiment["adapter"]["dim"], precision)  # fmt: skip  # Lightning's "bf16": its alias of bf16-mixed (autocast)
    report.check("optimizer, lr, wd, batch, epochs, warm-up, warm-up start / end lr, ViT and adapter drop path, dim, "
                 "precision", "equal" if mine == their else f"ours {mine} vs theirs {their}", "equal", mine == their)  # fmt: skip
    plain = (train["label_smoothing"] == 0 and train["gradient_clip_val"] is None and not train["train_ln"]
             and experiment["val_every_n_epoch"] == train["epochs"]
             and (experiment["data"]["train_split"], experiment["data"]["val_split"]) == ("trainval", "test"))  # fmt: skip
    report.check("no label smoothing, clipping or LayerNorm tuning; trains on train800val200, evaluates the test split "
                 "once, after the last epoch (val_every_n_epoch = epochs)", "yes" if plain else "no", "yes", plain)  # fmt: skip
    from modeling.lr_scheduler import LinearWarmupCosineAnnealingLR

    optim = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = LinearWarmupCosineAnnealingLR(optim, warmup_epochs=train["warmup"], max_epochs=train["epochs"],
                                              warmup_start_lr=lr / train["lr_start_factor"],
                                              eta_min=lr / train["lr_factor"])  # fmt: skip
    lrs = []
    for epoch in range(train["epochs"]):
        lrs.append(optim.param_groups[0]["lr"])
        scheduler.step(epoch=epoch)  # Lightning's current_epoch: the epoch that just finished
    difference = max_relative(lr_per_epoch(ours), lrs)
    report.check("lr of every epoch (bolts-epoch vs their LinearWarmupCosineAnnealingLR as Lightning steps it), max "
                 "relative difference", difference, "1e-9", difference <= 1e-9)  # fmt: skip
    from adapter_plus.vit_adapter import AdapterBlock, VisionTransformerAdapter

    shape = dict(img_size=32, patch_size=4, embed_dim=256, depth=1, num_heads=2, num_classes=100)
    torch.manual_seed(3)
    theirs = VisionTransformerAdapter(**shape, adapter_config=ADAPTER_PLUS, block_fn=tolerant(AdapterBlock))
    mine_model = VisionTransformer(**shape)
    backbone.reset_head(mine_model, 100)
    backbone.init_head(mine_model, ours.head_init)
    p_value = stats.ks_2samp(mine_model.head.weight.detach().flatten().numpy(),
                             theirs.head.weight.detach().flatten().numpy()).pvalue  # fmt: skip
    zero_bias = not mine_model.head.bias.any() and not theirs.head.bias.any()
    report.check(f"head init ({ours.head_init}; 25,600 weights): two-sample KS p-value, zero biases", float(p_value),
                 "> 0.01", p_value > 0.01 and zero_bias)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("Adapter+ (Steitz & Roth, CVPR 2024): `adapter_plus`, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "adapter_plus/vit_adapter.py, conf/adapter/{adapter_plus,base_adapter}.yaml, modeling/adaptermodel.py (rule), "
                    "conf/{config,train/default,train/optimizer/adamw,data/base_data,experiment/vtab/adapter_plus_dim8}.yaml, "
                    "modeling/lr_scheduler.py, train.py")  # fmt: skip
    sys.path.insert(0, str(args.source))
    check(report)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
