"""VPT on a timm Swin Transformer, as VPT's released Swin variant runs it (KMnP/vpt@4410440,
src/models/vit_prompt/swin_transformer.py: `PromptedSwinTransformer`, `PromptedSwinTransformerBlock`,
`PromptedWindowAttention`, `PromptedPatchMerging`; src/models/vit_backbones/swin_transformer.py
`BasicLayer.forward` for the deep prompts).

timm keeps a Swin's tokens as a (B, H, W, C) grid, which has no room for prompts, so the prompts
travel beside it: the wrapped patch embedding returns (grid, prompts, deep prompts to come), every
wrapped block and patch merging takes and returns that triple (timm's `SwinTransformerStage.forward`
and `nn.Sequential` pass it on unchanged), and the wrapped final norm pools grid and prompts. Their
semantics, step by step:

- the prompts (L x C) follow the patch embedding; in every block they are LayerNormed with the patch
  tokens, prepended to every attention window with zero relative-position bias and zero shift mask in
  their rows and columns, and their outputs are averaged over the windows; the residuals, drop path
  (one draw per image for prompts and patches alike) and the MLP treat them as tokens;
- patch merging gives them 4 C channels by repeating them four times, then merging's norm and reduction;
- deep: every block but the very first replaces the incoming prompts with its own (C wide at its stage),
  their dropout drawn once per stage for all its blocks' prompts and the whole batch, as theirs
  (`self.prompt_dropout(deep_prompt_embd)` on the stage's tensor before `BasicLayer.forward`);
- the final norm runs per token and the pool averages over the patches and the prompts together.

Deviation: their block pairs window w of image b with the prompts of image (b·nW + w) mod B
(`prompt_emb.unsqueeze(0).expand(num_windows, ...)` against window_partition's image-major order) and
averages prompt outputs across images the same way, so in a batch of several images VPT-shallow's
prompts carry other images' windows from block to block. (VPT-deep is spared: every block takes fresh
prompts, the same for every image, and only the last block's prompt outputs reach the pool, from a
stage of one window on Swin-B at 224 px.) Here each image's prompts see its own windows: the results
equal theirs run one image at a time (tools/faithfulness/vpt_swin.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse
from torch import nn

Pair = tuple[torch.Tensor, torch.Tensor]  # the (B, H, W, C) grid and the (B, L, C) prompts
# ... and the stage's deep prompts still to come, (blocks left, L, C) after dropout, or None
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


class SwinPromptInserter(nn.Module):
    """Wraps `patch_embed`: the grid and the shallow prompts, dropout drawn per image (their
    `incorporate_prompt`)."""

    def __init__(self, inner: nn.Module, prompts: nn.Parameter, dropout: float):
        super().__init__()
        self.inner, self.prompts, self.dropout = inner, prompts, nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> State:
        grid = self.inner(x)
        return grid, self.dropout(self.prompts.expand(grid.shape[0], -1, -1)), None


class PromptedMerging(nn.Module):
    """Wraps a stage's `downsample`: the grid as timm merges it, the prompts repeated to 4 C channels and
    then merging's norm and reduction (their `PromptedPatchMerging.upsample_prompt`); then the stage's
    deep prompts with one dropout draw for all of them (`owners`: the stage's blocks that have their own)."""

    def __init__(self, inner: nn.Module, owners: list[nn.Module], dropout: float):
        super().__init__()
        self.inner, self.dropout = inner, nn.Dropout(dropout)
        self.owners = tuple(owners)  # held by reference, not registered: the blocks own their prompts

    def forward(self, state: State) -> State:
        grid, prompts, _ = state
        if not isinstance(self.inner, nn.Identity):
            grid, prompts = self.inner(grid), self.inner.reduction(self.inner.norm(torch.cat([prompts] * 4, dim=-1)))
        deep = self.dropout(torch.cat([block.prompts for block in self.owners])) if self.owners else None
        return grid, prompts, deep


class PromptedSwinBlock(nn.Module):
    """Wraps a timm `SwinTransformerBlock` (its own modules and weights) to carry the prompts through it;
    with `prompts`, the block first replaces the incoming ones with its own (VPT-deep), as its stage's
    merging has dropped them out."""

    def __init__(self, block: nn.Module, prompts: nn.Parameter | None = None):
        super().__init__()
        self.block, self.prompts = block, prompts

    def forward(self, state: State) -> State:
        grid, prompts, deep = state
        batch, height, width, channels = grid.shape
        if self.prompts is not None:  # the next of the stage's dropped-out deep prompts, the same for every image
            prompts, deep = deep[:1].expand(batch, -1, -1), deep[1:]
        block, count = self.block, prompts.shape[1]
        tokens = torch.cat((prompts, grid.reshape(batch, -1, channels)), dim=1)
        attended = torch.cat(self._attention(block.norm1(grid), block.norm1(prompts)), dim=1)
        tokens = tokens + block.drop_path1(attended)
        tokens = tokens + block.drop_path2(block.mlp(block.norm2(tokens)))
        return tokens[:, count:].reshape(batch, height, width, channels), tokens[:, :count], deep

    def _attention(self, grid: torch.Tensor, prompts: torch.Tensor) -> Pair:
        """timm's `SwinTransformerBlock._attn` with the prompts in every window: (prompt outputs averaged
        over the windows, patch outputs flattened to (B, H W, C))."""
        block, (batch, height, width, channels) = self.block, grid.shape
        shift = tuple(block.shift_size)
        shifted = torch.roll(grid, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else grid
        pad_h = (block.window_size[0] - height % block.window_size[0]) % block.window_size[0]
        pad_w = (block.window_size[1] - width % block.window_size[1]) % block.window_size[1]
        shifted = F.pad(shifted, (0, 0, 0, pad_w, 0, pad_h))
        windows = window_partition(shifted, block.window_size).view(-1, block.window_area, channels)
        per_window = windows.shape[0] // batch  # window_partition's order: image-major
        prompts_per_window = prompts.unsqueeze(1).expand(-1, per_window, -1, -1).reshape(-1, *prompts.shape[1:])
        mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) else block.attn_mask
        out = prompted_window_attention(block.attn, torch.cat((prompts_per_window, windows), dim=1), mask)
        count = prompts.shape[1]
        prompt_out = out[:, :count].reshape(batch, per_window, count, channels).mean(1)
        out = out[:, count:].reshape(-1, block.window_size[0], block.window_size[1], channels)
        shifted = window_reverse(out, block.window_size, shifted.shape[1], shifted.shape[2])[:, :height, :width]
        grid = torch.roll(shifted, shifts=shift, dims=(1, 2)) if any(shift) else shifted
        return prompt_out, grid.reshape(batch, -1, channels)


def prompted_window_attention(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm's `WindowAttention.forward` on windows whose first tokens are prompts: the relative-position
    bias and the shift mask get zero rows and columns for them (their `PromptedWindowAttention`)."""
    windows, tokens, _ = x.shape
    count = tokens - attn.window_area
    qkv = attn.qkv(x).reshape(windows, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (count, 0, count, 0))  # (1, heads, tokens, tokens)
    if mask is not None:
        per_image = mask.shape[0]
        mask = F.pad(mask, (count, 0, count, 0)).view(1, per_image, 1, tokens, tokens)
        bias = (bias.unsqueeze(1) + mask).expand(windows // per_image, -1, attn.num_heads, -1, -1)
        bias = bias.reshape(windows, attn.num_heads, tokens, tokens)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout)
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(windows, tokens, -1)))


class PromptPool(nn.Module):
    """Wraps the final `norm`: both token kinds normed, then their mean over patches and prompts together
    (their `avgpool` over all L tokens), returned as a 1 x 1 grid for timm's average-pooling head."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, state: State) -> torch.Tensor:
        grid, prompts, _ = state
        tokens = torch.cat((self.inner(prompts), self.inner(grid).flatten(1, 2)), dim=1)
        return tokens.mean(1)[:, None, None, :]
