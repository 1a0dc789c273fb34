"""peftbench's `ln_tune` and `difffit` run beside OSU-MLB/PETL_Vision, which builds both.

    git clone https://github.com/OSU-MLB/PETL_Vision && git -C PETL_Vision checkout 245d2628754fa25bc56bdcbd7e63f0a4ac2eaaed
    python tools/faithfulness/petl_vision.py --source PETL_Vision [--out petl_vision.md]

Their modules run unchanged: model/vision_transformer.py (`VisionTransformerPETL`), model/block.py
(`difffit_gamma1/2`). Two things are read from their files rather than imported, because importing
those modules pulls their data stack (TensorFlow, OpenAI CLIP): the `params` their model reads, from
main.py's own `setup_parser()` (the function is compiled from their file and run), and the trainable
rule, experiment/build_model.py's `TUNE_MODULES` list plus the names `--ln` / `--difffit` add to it
("norm"; "bias" and "norm"), applied as their `any(m in name for m in TUNE_MODULES)`. Their model is
called as `forward_head(forward_features(x))`: today's timm passes `forward_features` arguments their
subclass predates. Checks at a small width with the same weights: logits and every gradient in fp64,
the training forward with drop path 0.5 (the γ after the drop path), trainable counts, the γ init.
"""

from __future__ import annotations

import argparse
import ast
import warnings
from pathlib import Path

import torch
from _common import (
    Report,
    finish,
    max_abs,
    parity_inputs,
    parse_args,
    same_masks_difference,
    share_values,
    source_commit,
    source_link,
)
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods import get_method

CLONE, COMMIT = "https://github.com/OSU-MLB/PETL_Vision", "245d2628754fa25bc56bdcbd7e63f0a4ac2eaaed"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES = 64, 2, 2, 32, 4, 10
# their configs' flags (experiment/config/method/*.yml) and the names their --ln / --difffit add to TUNE_MODULES
ADAPTER = ["--adapter_bottleneck", "8", "--adapter_scaler", "0.1", "--adapter_init", "xavier"]
ATTN = ["--ft_attn_module", "adapter", "--ft_attn_mode", "sequential_after"]
MLP = ["--ft_mlp_module", "adapter", "--ft_mlp_mode", "sequential_after"]
FLAGS = {
    "ln_tune": (["--ln"], ("norm",)),
    "difffit": (["--difffit"], ("bias", "norm")),
    "adapter_houlsby": (ATTN + MLP + ADAPTER, ()),  # rand_h_adapter.yml at d = 8, s = 0.1
    "adapter_pfeiffer": (MLP + ADAPTER, ()),  # rand_p_adapter.yml
}
RENAMES = ((".drop_path1.gamma", ".difffit_gamma1"), (".drop_path2.gamma", ".difffit_gamma2"),
           (".drop_path1.adapter.", ".ft_attn_module."), (".drop_path2.adapter.", ".ft_mlp_module."),
           (".down.", ".down_proj."), (".up.", ".up_proj."))  # fmt: skip
warnings.filterwarnings("ignore")


def their_params(source: Path, flags: list[str]) -> argparse.Namespace:
    """main.py's setup_parser(), compiled from their file and run, parsing `flags`."""
    tree = ast.parse((source / "main.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "setup_parser")
    namespace = {"argparse": argparse}
    exec(compile(ast.Module([function], []), str(source / "main.py"), "exec"), namespace)
    return namespace["setup_parser"]().parse_args(flags)


def their_tune_modules(source: Path, added: tuple[str, ...]) -> list[str]:
    tree = ast.parse((source / "experiment" / "build_model.py").read_text())
    assign = next(
        n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TUNE_MODULES"
    )
    return [*ast.literal_eval(assign.value), *added]


def models(source: Path, method: str, drop_path: float = 0.0, seed: int = 0):
    from model.vision_transformer import VisionTransformerPETL

    flags, added = FLAGS[method]
    torch.manual_seed(seed)
    ours = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                             mlp_ratio=4.0, num_classes=CLASSES, drop_path_rate=drop_path)  # fmt: skip
    backbone.reset_head(ours, CLASSES)
    theirs = VisionTransformerPETL(img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                                   mlp_ratio=4.0, num_classes=CLASSES, drop_path_rate=drop_path,
                                   params=their_params(source, flags))  # fmt: skip
    tune = their_tune_modules(source, added)
    for name, p in theirs.named_parameters():  # their get_model's rule
        p.requires_grad_(any(m in name for m in tune))
    adapt(ours, get_method(method)())
    return ours, theirs


def their_name(name: str) -> str:
    for ours, theirs in RENAMES:
        name = name.replace(ours, theirs)
    return name


def pairs(ours, theirs):
    their = dict(theirs.named_parameters())
    return [(n, p, their[their_name(n)]) for n, p in ours.named_parameters()]


def forward(theirs, x):
    return theirs.forward_head(theirs.forward_features(x))


def check_method(report: Report, source: Path, method: str) -> None:
    ours, theirs = models(source, method)
    share_values(pairs(ours, theirs))
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x, y = parity_inputs(IMAGE), torch.tensor([0, 3, 5, 9])
    difference = max_abs(ours(x), forward(theirs, x))
    report.check(f"{method}: logits, fp64, max abs difference", difference, "1e-10", difference <= 1e-10)
    torch.nn.functional.cross_entropy(ours(x), y).backward()
    torch.nn.functional.cross_entropy(forward(theirs, x), y).backward()
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
    worst = max(max_abs(m.grad, t.grad) for _, m, t in trainable)
    report.check(f"{method}: gradients of all {len(trainable)} trainable tensors, fp64, max abs difference", worst,
                 "1e-10", worst <= 1e-10)  # fmt: skip
    same = all(m.requires_grad == t.requires_grad for _, m, t in pairs(ours, theirs))
    counts = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (ours, theirs)]
    report.check(f"{method}: trainable parameters (same tensors; count ours / theirs)", f"{counts[0]:,} / {counts[1]:,}",
                 "equal", same and counts[0] == counts[1])  # fmt: skip
    if method != "ln_tune":
        ours, theirs = models(source, method, drop_path=0.5)
        share_values(pairs(ours, theirs))
        ours, theirs = ours.double().train(), theirs.double().train()
        difference = same_masks_difference(lambda: ours(x), lambda: forward(theirs, x))
        report.check(f"{method}: training forward with drop path 0.5 (same masks), fp64, max abs difference",
                     difference, "1e-10", difference <= 1e-10)  # fmt: skip
    if method.startswith("adapter_"):
        check_adapter_init(report, source, method)
    if method == "difffit":
        fresh_ours, fresh_theirs = models(source, method)
        gammas = [(m, t) for n, m, t in pairs(fresh_ours, fresh_theirs) if n.endswith(".gamma")]
        ones = all(torch.equal(m, t) and bool((m == 1).all()) for m, t in gammas)
        report.check(f"{method}: init of the {len(gammas)} γ vectors: ones on both sides", "yes" if ones else "no", "yes",
                     ones)  # fmt: skip


def check_adapter_init(report: Report, source: Path, method: str) -> None:
    """Their Adapter's xavier init is overwritten by the ViT's init_weights(''): compare what each side starts from."""
    ours, theirs = models(source, method, seed=1)
    pairs_ = [(n, m, t) for n, m, t in pairs(ours, theirs) if ".adapter." in n]
    for part in ("down", "up"):
        a = torch.cat([m.detach().flatten() for n, m, _ in pairs_ if f".{part}.weight" in n])
        b = torch.cat([t.detach().flatten() for n, _, t in pairs_ if f".{part}.weight" in n])
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"{method}: init of {part}.weight ({a.numel():,} values, ours init=effective): two-sample KS p-value",
                     round(p_value, 3), "> 0.01", p_value > 0.01)  # fmt: skip
    zero = all(bool((m == 0).all()) and bool((t == 0).all()) for n, m, t in pairs_ if n.endswith(".bias"))
    report.check(f"{method}: init of the adapters' biases: zero on both sides", "yes" if zero else "no", "yes", zero)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("LayerNorm tuning, DiffFit (Xie et al., ICCV 2023), Houlsby and Pfeiffer adapters as PETL_Vision builds them: "
                    "`ln_tune`, `difffit`, `adapter_houlsby`, `adapter_pfeiffer`",
                    source_link(CLONE, COMMIT, commit),
                    "model/vision_transformer.py, model/block.py, model/adapter.py, experiment/build_model.py (rule), "
                    "main.py (params), experiment/config/method/rand_{h,p}_adapter.yml")  # fmt: skip
    for method in FLAGS:
        check_method(report, args.source, method)
    finish(report, args)


if __name__ == "__main__":
    main()
