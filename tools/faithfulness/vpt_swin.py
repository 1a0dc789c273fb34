"""peftbench's `vpt_shallow` and `vpt_deep` on Swin, run beside VPT's released Swin variant.

    git clone https://github.com/KMnP/vpt && git -C vpt checkout 4410440ec1b489f24f66b9fad3d9b10ff3443567
    pip install ml_collections simplejson termcolor iopath fvcore pyyaml    # what their modules import
    python tools/faithfulness/vpt_swin.py --source vpt [--out vpt_swin.md]

Their modules run unchanged: src/models/vit_prompt/swin_transformer.py (`PromptedSwinTransformer` and its
block, window attention and patch merging) on src/models/vit_backbones/swin_transformer.py, frozen by
their rule (src/models/vit_models.py `Swin.build_backbone`, transfer type "prompt": only names holding
"prompt", and the head, train). The shape has four stages, as their deep prompts are written for
(`deep_prompt_embeddings_0` .. `_3`): 64 px, patch 2, window 4, widths 16 to 128, two blocks each. In
fp64, with their random weights (perturbed) loaded into timm's Swin by timm's own checkpoint filter
(their layout is the original Microsoft one) and our prompts and head copied into theirs: the logits of
each image alone, the logits of a batch of 4 against theirs image by image, what their batch pairing
changes, the gradients, the trainable counts, the prompt init and the training forward with prompt
dropout (the same masks from the same seed: theirs draws the deep prompts' per stage, as ours).
"""

from __future__ import annotations

import torch
from _common import (
    Report,
    finish,
    max_abs,
    parity_inputs,
    parse_args,
    same_masks_difference,
    source_commit,
    source_link,
)
from scipy import stats
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
from vpt import prompt_config

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.vpt import VPTDeep, VPTShallow

CLONE, COMMIT = "https://github.com/KMnP/vpt", "4410440ec1b489f24f66b9fad3d9b10ff3443567"
SHAPE = {"img_size": 64, "patch_size": 2, "embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8),
         "window_size": 4, "num_classes": 10}  # fmt: skip
TOKENS = 5


def their_model(deep: bool, dropout: float, seed: int, embed_dim: int = SHAPE["embed_dim"], tokens: int = TOKENS):
    from src.models.vit_prompt.swin_transformer import PromptedSwinTransformer

    config = prompt_config(deep, dropout)
    config.NUM_TOKENS = tokens
    torch.manual_seed(seed)
    shape = {**SHAPE, "embed_dim": embed_dim, "depths": list(SHAPE["depths"]), "num_heads": list(SHAPE["num_heads"])}
    theirs = PromptedSwinTransformer(config, drop_path_rate=0.0, **shape)
    for name, p in theirs.named_parameters():  # vit_models.py, transfer type "prompt"
        p.requires_grad_("prompt" in name or name.startswith("head"))
    return theirs


def models(deep: bool, dropout: float = 0.0, seed: int = 0):
    """Ours and theirs with the same frozen weights (theirs, perturbed, through timm's checkpoint filter)
    and the same prompts and head (ours, perturbed, copied into theirs)."""
    theirs = their_model(deep, dropout, seed)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    ours = SwinTransformer(**SHAPE, drop_path_rate=0.0)
    frozen = {k: v for k, v in theirs.state_dict().items() if "prompt" not in k}
    ours.load_state_dict(checkpoint_filter_fn(frozen, ours))
    backbone.reset_head(ours, SHAPE["num_classes"])
    torch.manual_seed(seed + 1)
    adapt(ours, (VPTDeep if deep else VPTShallow)(prompt_len=TOKENS, prompt_dropout=dropout))
    with torch.no_grad():
        for mine, their in trainable_pairs(ours, theirs, deep):
            for p in mine:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
            their.copy_(torch.cat([p.reshape(-1, *their.shape[1:]) for p in mine]))
    return ours, theirs


def trainable_pairs(ours, theirs, deep: bool) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """(our tensors, their tensor) for every trainable tensor of theirs: a stage's deep prompts are one
    tensor there (one row per block that has its own), one per block here."""
    out = [([ours.patch_embed.prompts], theirs.prompt_embeddings), ([ours.head.fc.weight], theirs.head.weight),
           ([ours.head.fc.bias], theirs.head.bias)]  # fmt: skip
    if deep:
        for s, stage in enumerate(ours.layers):
            own = [block.prompts for block in stage.blocks if block.prompts is not None]
            out.append((own, getattr(theirs, f"deep_prompt_embeddings_{s}")))
    return out


def check_method(report: Report, deep: bool) -> None:
    name = "vpt_deep" if deep else "vpt_shallow"
    ours, theirs = models(deep)
    ours, theirs = ours.double(), theirs.double()
    ours.eval(), theirs.eval()  # their train(mode) returns None
    x, y = parity_inputs(SHAPE["img_size"]), torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        their_alone = torch.cat([theirs(x[i : i + 1]) for i in range(len(x))])
        alone = max_abs(torch.cat([ours(x[i : i + 1]) for i in range(len(x))]), their_alone)
        batch = max_abs(ours(x), their_alone)
        their_batch = max_abs(theirs(x), their_alone)
    report.check(f"{name}: logits of each image alone, fp64, max abs difference", alone, "1e-10", alone <= 1e-10)
    report.check(f"{name}: logits of a batch of 4 (ours) vs each image alone (theirs), fp64, max abs difference",
                 batch, "1e-10", batch <= 1e-10)  # fmt: skip
    why = ("every block takes fresh prompts and only the last one's outputs, in a one-window stage, reach the pool"
           if deep else "the prompts carry other images' windows from block to block")  # fmt: skip
    report.check(f"{name}: their batch of 4 vs their images alone (their block pairs window w of image b with "
                 f"image (b·nW + w) mod B's prompts; {why}; a deviation kept out, methods/vpt_swin.py)", their_batch,
                 "reported", True)  # fmt: skip

    worst = 0.0
    for i in range(len(x)):  # one image at a time, where their pairing is right
        for model in (ours, theirs):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for mine, their in trainable_pairs(ours, theirs, deep):
            grad = torch.cat([p.grad.reshape(-1, *their.shape[1:]) for p in mine])
            worst = max(worst, max_abs(grad, their.grad))
    report.check(f"{name}: gradients of every prompt and the head, fp64, each image alone, max abs difference",
                 worst, "1e-10", worst <= 1e-10)  # fmt: skip

    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check(f"{name}: trainable parameters (ours / theirs)", f"{counts[0]:,} / {counts[1]:,}", "equal",
                 counts[0] == counts[1])  # fmt: skip

    ours, theirs = models(deep, dropout=0.1)
    ours, theirs = ours.double(), theirs.double()
    ours.train(), theirs.train()  # their train(): the backbone in eval, the prompt dropout on
    with torch.no_grad():  # one image: the batch is where their pairing differs
        train_mode = same_masks_difference(lambda: ours(x[:1]), lambda: theirs(x[:1]))
    report.check(f"{name}: training forward with prompt dropout 0.1 (the same masks: per image for the shallow "
                 "prompts, per stage and batch for the deep ones), fp64, max abs difference", train_mode, "1e-10",
                 train_mode <= 1e-10)  # fmt: skip

    mine = SwinTransformer(**{**SHAPE, "embed_dim": 64}, drop_path_rate=0.0)
    torch.manual_seed(11)
    adapt(mine, (VPTDeep if deep else VPTShallow)(prompt_len=50))
    theirs = their_model(deep, 0.0, seed=12, embed_dim=64, tokens=50)
    a = torch.cat([p.detach().flatten() for n, p in mine.named_parameters() if n.endswith("prompts")])
    b = torch.cat([p.detach().flatten() for n, p in theirs.named_parameters() if "prompt_embeddings" in n])
    p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
    report.check(f"{name}: init of the prompts ({a.numel():,} values; every stage's bound from the patch "
                 "embedding's width): two-sample KS p-value", float(p_value), "> 0.01", p_value > 0.01)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("VPT on Swin (Jia et al., ECCV 2022): `vpt_shallow`, `vpt_deep` on `swin`",
                    source_link(CLONE, COMMIT, commit),
                    "src/models/vit_prompt/swin_transformer.py, src/models/vit_backbones/swin_transformer.py, "
                    "src/models/vit_models.py (rule)")  # fmt: skip
    for deep in (False, True):
        check_method(report, deep)
    finish(report, args)


if __name__ == "__main__":
    main()
