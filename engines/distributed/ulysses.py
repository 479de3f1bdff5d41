"""Ulysses sequence-parallel attention (DeepSpeed-Ulysses), written on plain torch.distributed.

Each rank holds a slice of the sequence for every head. An all_to_all swaps that for every position
of a slice of the heads, each rank runs ordinary scaled-dot-product attention on its heads over the
whole sequence, and a second all_to_all swaps back. Attention is exact (each head sees every key),
so the result equals single-process attention; only activations are split, which is what lets a
long video sequence fit across GPUs. xfuser/yunchang do this with fused kernels on CUDA only; this
version runs on gloo (CPU) and NCCL alike, inference only (no autograd through the all_to_all).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed import ProcessGroup


def _world(group: ProcessGroup | None) -> int:
    return dist.get_world_size(group)


def check_split(num_heads: int, local_seq_len: int, world: int) -> None:
    """ValueError unless the heads split evenly across `world` ranks and each rank holds some sequence."""
    if num_heads % world:
        raise ValueError(
            f"Ulysses attention splits the heads across ranks: {num_heads} heads do not divide by "
            f"{world} ranks (use a world size that divides {num_heads})"
        )
    if local_seq_len < 1:
        raise ValueError("each rank must hold at least one position of the sequence")


def seq_to_heads(x: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """[B, H, S/W, D] (this rank's positions, all heads) -> [B, H/W, S, D] (its heads, all positions).

    Every rank must hold the same number of positions; rank r holds positions r*S/W .. (r+1)*S/W.
    """
    world = _world(group)
    batch, heads, local_seq, dim = x.shape
    check_split(heads, local_seq, world)
    # Chunk j of the heads goes to rank j; all_to_all_single splits along dim 0.
    send = x.reshape(batch, world, heads // world, local_seq, dim).permute(1, 0, 2, 3, 4).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[j] is rank j's positions of this rank's heads: concatenate them in rank order.
    return received.permute(1, 2, 0, 3, 4).reshape(batch, heads // world, world * local_seq, dim)


def heads_to_seq(x: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """The inverse of `seq_to_heads`: [B, H/W, S, D] -> [B, H, S/W, D]."""
    world = _world(group)
    batch, local_heads, seq, dim = x.shape
    if seq % world:
        raise ValueError(f"a sequence of {seq} positions does not split evenly across {world} ranks")
    # Chunk j of the positions goes back to rank j.
    send = x.reshape(batch, local_heads, world, seq // world, dim).permute(2, 0, 1, 3, 4).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    # received[j] is rank j's heads of this rank's positions: stack them in rank (= head) order.
    return received.permute(1, 0, 2, 3, 4).reshape(batch, world * local_heads, seq // world, dim)


def ulysses_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: ProcessGroup | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention over a sequence split across the ranks of `group`.

    q, k, v: [B, H, S/W, D], this rank's contiguous slice of the sequence (same length on every
    rank). Returns this rank's slice of the output, [B, H, S/W, D], equal to the matching slice of
    `F.scaled_dot_product_attention` on the whole sequence.
    """
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k and v must have the same shape; got {q.shape}, {k.shape}, {v.shape}")
    out = F.scaled_dot_product_attention(
        seq_to_heads(q, group),
        seq_to_heads(k, group),
        seq_to_heads(v, group),
        is_causal=is_causal,
        scale=scale,
    )
    return heads_to_seq(out, group)
