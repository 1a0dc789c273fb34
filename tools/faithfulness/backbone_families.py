"""peftbench's `rlrr` on Swin and `ssf` on Swin and ConvNeXt, run beside the authors' released code.

    git clone https://github.com/zstarN70/RLRR && git -C RLRR checkout 287c772fa71d56d95016112b5170ed8c7af259a0
    git clone https://github.com/dongzelian/SSF && git -C SSF checkout e94e0e704a4ece1986a537c97a95158b46838f71
    python tools/faithfulness/backbone_families.py --rlrr-source RLRR --ssf-source SSF [--out families.md]

Nothing of theirs is copied here: their model files are imported from the checkouts and run unchanged
(RLRR models/swin.py `SwinTransformer` with rlrr_enable; SSF models/swin_transformer.py `SwinTransformer`
and models/convnext.py `ConvNeXt`, tuning_mode='ssf'), each frozen by the rule their training code
applies (RLRR train_vtab.py `frozen_param(model, ['head', 'scale', 'shift'])`; SSF optim_factory.py
`create_optimizer_v2(..., tuning_mode='ssf')`). They target older timm; on the installed timm they
import after the shims of tools/faithfulness/ssf.py (an empty `ipdb`, timm's renamed optimisers),
and timm's model registry, which their `@register_model` entries overwrite, is put back afterwards.
For each pair, at the tiny shape of peftbench's zoo (32 px Swin: patch 2, window 4, widths 32, 64,
depths 2, 2; ConvNeXt: widths 16-128, depths 1, 1, 2, 1), in fp64, theirs takes our frozen weights
(timm 1.0 keys mapped onto theirs: Swin's PatchMerging closes stage i there and opens stage i+1 in
timm 1.0) and our trainable values, randomly perturbed first (the frozen weights too, and ConvNeXt's
layer scale set near 1, so that no branch is silenced by an init): logits, the gradient of every
trainable tensor, the trainable sets and counts, and the counts of the full-size backbones
(Swin-B, ConvNeXt-B, with a 100-class head) built by their registered entrypoints.
ConvNeXt: their file keeps its own LayerNorm2d, whose branch for a non-contiguous input (every
Downsample norm's: a block's output is permuted back from channels-last) normalises by the unbiased
variance; timm 1.0's divides by C, as the pretrained ConvNeXt was trained (F.layer_norm). That is a
deviation of their frozen backbone, not of SSF: we keep timm's norms (SOURCES.md of tasks/paper lists
it), the kit reports the difference as their file runs, and its verdict compares the two with those
norms handed contiguous inputs by a pre-hook (their F.layer_norm branch).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import (
    Report,
    agreement,
    finish,
    logits_then_backward,
    max_abs,
    parity_inputs,
    source_commit,
    source_link,
)
from ssf import install_shims

import peftbench
from peftbench.params import count_trainable
from peftbench.suites import get_suite

RLRR_CLONE, RLRR_COMMIT = "https://github.com/zstarN70/RLRR", "287c772fa71d56d95016112b5170ed8c7af259a0"
SSF_CLONE, SSF_COMMIT = "https://github.com/dongzelian/SSF", "e94e0e704a4ece1986a537c97a95158b46838f71"
IMAGE, CLASSES, BOUND = 32, 10, 1e-10
FULL_TASK = "cifar"  # the VTAB-1k task whose head the full-size counts include (100 classes)
SWIN_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4))
CONVNEXT_TINY = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
warnings.filterwarnings("ignore")

# Their names for our trainable tensors, matched (fullmatch) on our name after `structural_name`;
# {k} is scale or shift. RLRR models/swin.py: ssf_{k}_norm1/2 per block, ssf_{k}_encode_norm, and
# RLRRLinear's scale_col / scale_line / shift_bias; SSF: ssf_{k}_1 / _2 on the module whose layer it follows.
TRAINABLE_NAMES = {
    ("rlrr", "swin"): [
        (r"(.*\.blocks\.\d+)\.norm([12])\.ssf\.(?P<k>scale|shift)", r"\1.ssf_{k}_norm\2"),
        (r"norm\.ssf\.(?P<k>scale|shift)", "ssf_{k}_encode_norm"),
        (r"(.*)\.s_in", r"\1.scale_col"),
        (r"(.*)\.s_out", r"\1.scale_line"),
        (r"(.*)\.bias_shift", r"\1.shift_bias"),
    ],
    ("ssf", "swin"): [
        (r"patch_embed\.proj\.ssf\.(?P<k>scale|shift)", "patch_embed.ssf_{k}_1"),
        (r"patch_embed\.norm\.ssf\.(?P<k>scale|shift)", "patch_embed.ssf_{k}_2"),
        (r"(.*\.blocks\.\d+)\.norm1\.ssf\.(?P<k>scale|shift)", r"\1.ssf_{k}_1"),
        (r"(.*\.blocks\.\d+)\.norm2\.ssf\.(?P<k>scale|shift)", r"\1.ssf_{k}_2"),
        (r"(.*)\.attn\.qkv\.ssf\.(?P<k>scale|shift)", r"\1.attn.ssf_{k}_1"),
        (r"(.*)\.attn\.proj\.ssf\.(?P<k>scale|shift)", r"\1.attn.ssf_{k}_2"),
        (r"(.*)\.mlp\.fc1\.ssf\.(?P<k>scale|shift)", r"\1.mlp.ssf_{k}_1"),
        (r"(.*)\.mlp\.fc2\.ssf\.(?P<k>scale|shift)", r"\1.mlp.ssf_{k}_2"),
        (r"norm\.ssf\.(?P<k>scale|shift)", "ssf_{k}_1"),
    ],
    ("ssf", "convnext"): [
        (r"stem\.proj\.ssf\.(?P<k>scale|shift)", "stem.ssf_{k}_1"),
        (r"stem\.norm\.ssf\.(?P<k>scale|shift)", "stem.ssf_{k}_2"),
        (r"(.*\.blocks\.\d+)\.conv_dw\.ssf\.(?P<k>scale|shift)", r"\1.ssf_{k}_1"),
        (r"(.*\.blocks\.\d+)\.norm\.ssf\.(?P<k>scale|shift)", r"\1.ssf_{k}_2"),
        (r"(.*)\.mlp\.fc1\.ssf\.(?P<k>scale|shift)", r"\1.mlp.ssf_{k}_1"),
        (r"(.*)\.mlp\.fc2\.ssf\.(?P<k>scale|shift)", r"\1.mlp.ssf_{k}_2"),
        (r"norm_pre\.(?P<k>scale|shift)", "ssf_{k}_1"),
    ],
}


@dataclass(frozen=True)
class Case:
    method: str
    family: str
    tiny: str  # our tiny timm model
    full: str  # the full-size timm model (ours) and the entrypoint of theirs with the same name

    @property
    def label(self) -> str:
        return f"`{self.method}` on {'Swin' if self.family == 'swin' else 'ConvNeXt'}"


CASES = (
    Case("rlrr", "swin", "swin_micro_patch2_window4_32", "swin_base_patch4_window7_224"),
    Case("ssf", "swin", "swin_micro_patch2_window4_32", "swin_base_patch4_window7_224"),
    Case("ssf", "convnext", "convnext_micro_32", "convnext_base"),
)


# ------------------------------------------------------------------------------------------- their code


def parse_sources() -> argparse.Namespace:
    """_common.parse_args for two checkouts: --rlrr-source and --ssf-source."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, clone, commit in (("--rlrr-source", RLRR_CLONE, RLRR_COMMIT), ("--ssf-source", SSF_CLONE, SSF_COMMIT)):
        parser.add_argument(flag, type=Path, required=True,
                            help=f"a checkout: git clone {clone} && git -C <dir> checkout {commit}")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the Markdown section to this file")
    args = parser.parse_args()
    args.command = "python " + " ".join(
        [sys.argv[0], "--rlrr-source", "<RLRR checkout>", "--ssf-source", "<SSF checkout>"]
        + (["--out", str(args.out)] if args.out else [])
    )
    for source, clone, commit in (
        (args.rlrr_source, RLRR_CLONE, RLRR_COMMIT),
        (args.ssf_source, SSF_CLONE, SSF_COMMIT),
    ):
        if not source.is_dir():
            sys.exit(f"{source} is not a folder; get it with: git clone {clone} && git -C <dir> checkout {commit}")
    # RLRR's train_vtab.py imports its own `models`, `utils` and `RLRRDatasets`: its checkout goes on
    # sys.path. SSF's files are loaded by path only, so that its `models` and `utils` shadow nothing.
    sys.path.insert(0, str(args.rlrr_source.resolve()))
    return args


@contextlib.contextmanager
def timm_registry_kept():
    """Their modules `@register_model` names timm has (swin_base_patch4_window7_224, convnext_base),
    which overwrites timm's entries: the registry is restored on exit, so that our models stay timm's."""
    from timm.models import _registry

    tables = {n: v for n, v in vars(_registry).items() if n.startswith("_") and not n.startswith("__")}
    saved = {n: copy.deepcopy(v) for n, v in tables.items() if isinstance(v, (dict, set))}
    try:
        yield
    finally:
        for name, value in saved.items():
            live = tables[name]
            live.clear()
            live.update(value)


def load_module(name: str, path: Path):
    """Import one of their files, unchanged, under a name of its own."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Theirs:
    rlrr_swin: object
    ssf_swin: object
    ssf_convnext: object
    train_vtab: object
    optim_factory: object

    def module(self, case: Case):
        return {("rlrr", "swin"): self.rlrr_swin, ("ssf", "swin"): self.ssf_swin}.get(
            (case.method, case.family), self.ssf_convnext
        )

    def freeze(self, case: Case, model: torch.nn.Module) -> None:
        """Their own trainable set: RLRR train_vtab.setup's frozen_param(model, ['head', 'scale', 'shift']);
        SSF create_optimizer_v2(tuning_mode='ssf'), which keeps "head.", "ssf_scale", "ssf_shift_" names."""
        with contextlib.redirect_stdout(io.StringIO()):  # their code prints as it freezes
            if case.method == "rlrr":
                self.train_vtab.args = argparse.Namespace()  # frozen_param prints the script's global args
                self.train_vtab.frozen_param(model, ["head", "scale", "shift"])
            else:
                self.optim_factory.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=5e-5, tuning_mode="ssf")

    def tiny(self, case: Case, seed: int = 1) -> torch.nn.Module:
        torch.manual_seed(seed)
        module = self.module(case)
        if case.family == "swin":
            extra = {"rlrr_enable": True} if case.method == "rlrr" else {"tuning_mode": "ssf"}
            model = module.SwinTransformer(**SWIN_TINY, num_classes=CLASSES, drop_path_rate=0.0, **extra)
        else:
            model = module.ConvNeXt(**CONVNEXT_TINY, num_classes=CLASSES, tuning_mode="ssf")
        self.freeze(case, model)
        return model

    def full(self, case: Case, classes: int) -> torch.nn.Module:
        """Their full-size model from their registered entrypoint of that name (Swin-B/4 window 7, ConvNeXt-B)."""
        extra = {} if case.method == "rlrr" else {"tuning_mode": "ssf"}
        model = getattr(self.module(case), case.full)(pretrained=False, num_classes=classes, **extra)
        self.freeze(case, model)
        return model


def load_theirs(args: argparse.Namespace) -> Theirs:
    install_shims()
    with timm_registry_kept():
        import train_vtab

        return Theirs(
            load_module("rlrr_models_swin", args.rlrr_source / "models" / "swin.py"),
            load_module("ssf_models_swin_transformer", args.ssf_source / "models" / "swin_transformer.py"),
            load_module("ssf_models_convnext", args.ssf_source / "models" / "convnext.py"),
            train_vtab,
            load_module("ssf_optim_factory", args.ssf_source / "optim_factory.py"),
        )


# ------------------------------------------------------------------------------------------- names


def structural_name(case: Case, name: str) -> str:
    """Our (timm 1.0) name in their older timm layout: wrappers' `.layer.` dropped; Swin's PatchMerging
    at the start of stage i+1 (timm 1.0) sits at the end of stage i there, and the head is `head`, not
    `head.fc`; ConvNeXt's stem and downsample Sequentials are named modules (proj, norm) there."""
    name = name.replace(".layer.", ".")
    if case.family == "swin":
        name = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", name)
        return re.sub(r"^head\.fc\.", "head.", name)
    name = re.sub(r"^stem\.0\.", "stem.proj.", name)
    name = re.sub(r"^stem\.1\.", "stem.norm.", name)
    name = re.sub(r"^(stages\.\d+\.downsample)\.0\.", r"\1.norm.", name)
    return re.sub(r"^(stages\.\d+\.downsample)\.1\.", r"\1.proj.", name)


def their_name(case: Case, name: str) -> str:
    mapped = structural_name(case, name)
    for pattern, template in TRAINABLE_NAMES[(case.method, case.family)]:
        found = re.fullmatch(pattern, mapped)
        if found:
            kind = found.groupdict().get("k") or ""
            return found.expand(template.replace("{k}", kind))
    return mapped


def unused_by_their_forward(model: torch.nn.Module) -> set[str]:
    """RLRR's RLRRLinear always builds a bias and, for a bias-free layer (PatchMerging.reduction), adds
    only shift_bias in forward (`has_bias`); that bias is frozen and never read."""
    return {f"{path}.bias" for path, module in model.named_modules() if getattr(module, "has_bias", True) is False}


def pairs(case: Case, ours, theirs) -> tuple[list[tuple[str, str, torch.Tensor, torch.Tensor]], list[str]]:
    """(our name, their name, our tensor, their tensor) for every parameter of ours, and the names of
    theirs left without a counterpart (and not in `unused_by_their_forward`)."""
    mine, their = dict(ours.named_parameters()), dict(theirs.named_parameters())
    found = []
    for name, tensor in mine.items():
        other = their.get(their_name(case, name))
        if other is None or other.numel() != tensor.numel():
            raise SystemExit(f"{case.label}: our {name} has no counterpart of {tensor.numel()} values "
                             f"(looked for {their_name(case, name)})")  # fmt: skip
        found.append((name, their_name(case, name), tensor, other))
    matched = {t for _, t, _, _ in found}
    left = sorted(set(their) - matched - unused_by_their_forward(theirs))
    return found, left


@torch.no_grad()
def share_values(case: Case, ours, theirs) -> None:
    """Perturb every tensor of ours (trainable and frozen; layer scale set near 1), then copy each into
    theirs in their shape (buffers are not copied: `buffers_difference` compares them)."""
    generator = torch.Generator().manual_seed(7)
    found, _ = pairs(case, ours, theirs)
    for name, _, mine, their in found:
        if name.endswith(".gamma"):  # ConvNeXt's frozen layer scale: timm's 1e-6 init would mute the blocks
            mine.fill_(1.0)
        mine.add_(torch.randn(mine.shape, generator=generator, dtype=mine.dtype) * 0.05)
        their.copy_(mine.reshape(their.shape))


def buffers_difference(case: Case, ours, theirs) -> tuple[int, float]:
    """Swin's relative_position_index and attn_mask: (buffers compared, max abs difference)."""
    their = dict(theirs.named_buffers())
    worst, count = 0.0, 0
    for name, mine in ours.named_buffers():
        other = their.get(structural_name(case, name))
        if other is None or other.shape != mine.shape:
            return count, float("inf")
        worst, count = max(worst, max_abs(mine, other)), count + 1
    return count, worst


# ------------------------------------------------------------------------------------------- checks


def tiny_pair(theirs_code: Theirs, case: Case):
    """Ours (peftbench.build_model, random init) and theirs at the tiny shape, sharing our perturbed
    values, both fp64 in eval mode; with their (name, tensor) pairs and their parameters left unmatched."""
    torch.manual_seed(0)
    ours = peftbench.build_model(case.method, case.tiny, CLASSES, pretrained=False)
    theirs = theirs_code.tiny(case)
    found, left = pairs(case, ours, theirs)
    share_values(case, ours, theirs)
    return ours.double().eval(), theirs.double().eval(), found, left


def forward_backward(ours, theirs) -> float:
    """logits_then_backward without its report row: the logits' max abs difference."""
    x, y = parity_inputs(IMAGE), torch.tensor([0, 3, 5, 9])
    difference = max_abs(ours(x), theirs(x))
    for model in (ours, theirs):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return difference


def gradient_differences(found) -> tuple[int, float, list[str]]:
    """(trainable tensors, max abs difference of their gradients, the tensors beyond BOUND, largest first)."""
    trainable = [(n, t, m, o) for n, t, m, o in found if m.requires_grad or o.requires_grad]
    worst, differ = 0.0, []
    for name, other_name, mine, other in trainable:
        if mine.grad is None or other.grad is None:
            differ.append((float("inf"), f"{name} (no gradient)"))
            continue
        difference = max_abs(mine.grad.reshape(other.shape), other.grad)
        worst = max(worst, difference)
        if difference > BOUND:
            differ.append((difference, f"{name} / {other_name}: {difference:.3g}"))
    return len(trainable), worst, [text for _, text in sorted(differ, reverse=True)]


def named_differences(differ: list[str], total: int, shown: int = 4) -> str:
    if not differ:
        return ""
    more = f", and {len(differ) - shown} more" if len(differ) > shown else ""
    return f" (differ: {len(differ)}/{total}, largest: {'; '.join(differ[:shown])}{more})"


def check_tiny(report: Report, theirs_code: Theirs, case: Case) -> None:
    prefix = f"{case.label}: "
    ours, theirs, found, left = tiny_pair(theirs_code, case)
    unused = sorted(unused_by_their_forward(theirs))
    note = f"; their {', '.join(unused)}: the bias RLRRLinear builds and never reads (has_bias False)" if unused else ""
    report.check(f"{prefix}every parameter of theirs has its counterpart in ours ({len(found)} tensors{note})",
                 agreement(left, len(found) + len(left)), "all", not left)  # fmt: skip
    count, worst = buffers_difference(case, ours, theirs)
    if count:
        report.check(f"{prefix}buffers (relative_position_index, attn_mask; {count}), max abs difference", worst,
                     "0", worst == 0)  # fmt: skip
    if case.family == "convnext":  # their frozen Downsample norms differ from the pretrained ConvNeXt's: see below
        logits = forward_backward(ours, theirs)
        total, worst, _ = gradient_differences(found)
        report.check(f"{prefix}logits / gradients of all {total} trainable tensors as their file runs, fp64, max abs "
                     "difference: the deviation of their backbone's LayerNorm2d (diagnosis below)",
                     f"{logits:.3g} / {worst:.3g}", "reported", None)  # fmt: skip
    else:
        logits_then_backward(report, ours, theirs, IMAGE, prefix)
        total, worst, differ = gradient_differences(found)
        report.check(f"{prefix}gradients of all {total} trainable tensors, fp64, max abs difference"
                     + named_differences(differ, total), worst, f"{BOUND:g}", not differ)  # fmt: skip
    same_set = [n for n, _, m, o in found if m.requires_grad != o.requires_grad]
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check(f"{prefix}trainable parameters, {CLASSES}-class head (same tensors on both sides"
                 + (f"; differ: {same_set}" if same_set else "") + "; count ours / theirs)",
                 f"{counts[0]:,} / {counts[1]:,}", "equal", not same_set and counts[0] == counts[1])  # fmt: skip


def check_downsample_norms(report: Report, theirs_code: Theirs, case: Case) -> None:
    """Their ConvNeXt keeps its own LayerNorm2d (models/convnext.py): F.layer_norm for a contiguous input,
    else torch.var_mean, whose variance is the unbiased one (divisor C-1). A block's output (permuted back
    from channels-last) is not contiguous, so every Downsample norm takes that branch; timm 1.0's
    LayerNorm2d (ours, frozen) divides by C. Reported, then isolated: the same comparison with their
    Downsample norms handed `x.contiguous()` by a forward pre-hook (their F.layer_norm branch)."""
    prefix = f"{case.label}, their Downsample norms: "
    ours, theirs, found, _ = tiny_pair(theirs_code, case)
    norms = [stage.downsample.norm for stage in theirs.stages if hasattr(stage.downsample, "norm")]
    seen = []

    def observe(module, inputs):
        x = inputs[0]
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=1)
        unbiased = (x - mean) * torch.rsqrt(var + module.eps) * module.weight[:, None, None] + module.bias[
            :, None, None
        ]
        seen.append((x.is_contiguous(), max_abs(module.forward(x), unbiased)))

    handles = [norm.register_forward_pre_hook(observe) for norm in norms]
    with torch.no_grad():
        theirs(parity_inputs(IMAGE))
    for handle in handles:
        handle.remove()
    report.check(f"{prefix}inputs of their {len(norms)} Downsample norms that are not contiguous (so their "
                 "LayerNorm2d takes its torch.var_mean branch); its output against the unbiased-variance formula, "
                 "max abs difference", f"{sum(not c for c, _ in seen)}/{len(seen)}; {max(d for _, d in seen):.3g}",
                 "reported", None)  # fmt: skip
    handles = [norm.register_forward_pre_hook(lambda _, inputs: (inputs[0].contiguous(),)) for norm in norms]
    logits = forward_backward(ours, theirs)
    for handle in handles:
        handle.remove()
    total, worst, differ = gradient_differences(found)
    report.check(f"{prefix}with their Downsample norms fed contiguous inputs (pre-hook): logits / gradients of all "
                 f"{total} trainable tensors, fp64, max abs difference" + named_differences(differ, total),
                 f"{logits:.3g} / {worst:.3g}", f"{BOUND:g}", logits <= BOUND and not differ)  # fmt: skip


def check_full_size(report: Report, theirs_code: Theirs, case: Case) -> None:
    suite = get_suite("vtab1k")
    classes = suite.task(FULL_TASK).num_classes
    ours = count_trainable(case.method, case.full, suite, {})
    theirs = theirs_code.full(case, classes)
    classifier = theirs.head.fc if case.family == "convnext" else theirs.head
    with_head = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    without_head = with_head - sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    del theirs
    report.check(f"{case.label}: `{case.full}` trainable parameters without the classifier (ours "
                 "peftbench.params.count_trainable / theirs at full size, by their rule)",
                 f"{ours.without_head:,} / {without_head:,}", "equal", ours.without_head == without_head)  # fmt: skip
    report.check(f"{case.label}: `{case.full}` trainable parameters with the {classes}-class head of VTAB-1k "
                 f"{FULL_TASK} (ours / theirs)", f"{ours.with_head[FULL_TASK]:,} / {with_head:,}", "equal",
                 ours.with_head[FULL_TASK] == with_head)  # fmt: skip


def main() -> None:
    args = parse_sources()
    theirs = load_theirs(args)
    commits = [source_commit(args.rlrr_source), source_commit(args.ssf_source)]
    sources = ", ".join(
        source_link(clone, pinned, commit) + (" (exported tree: the pinned commit)" if commit == "unknown" else "")
        for (clone, pinned), commit in zip(((RLRR_CLONE, RLRR_COMMIT), (SSF_CLONE, SSF_COMMIT)), commits)
    )
    report = Report("Backbone families: `rlrr` on Swin, `ssf` on Swin and ConvNeXt, against the released code",
                    sources,
                    "RLRR models/swin.py, train_vtab.py (frozen_param); SSF models/swin_transformer.py, "
                    "models/convnext.py, optim_factory.py (create_optimizer_v2)")  # fmt: skip
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for case in CASES:
        check_tiny(report, theirs, case)
        if case.family == "convnext":
            check_downsample_norms(report, theirs, case)
    for case in CASES:
        check_full_size(report, theirs, case)
    finish(report, args)


if __name__ == "__main__":
    main()
