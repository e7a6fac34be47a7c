"""Temporal Orthogonal Filtering (TOF): fuse overlapping chunk estimates of the same frame.

Every query at frame k yields estimates of frames k+1..k+L. For each output frame TOF takes the
**uniform** mean of all its estimates: translations averaged directly, rotation matrices (wrist and
the 15 finger joints) averaged entry-wise and projected back onto SO(3) by SVD with the determinant
fix (``megohand.geometry.rotations.project_to_so3``: the chordal L2 mean). Betas are not fused:
they come from the initial state (the model never predicts them).

Uniform weights make the online form a running sum: memory is O(L) per sequence whatever the
sequence length, and one output step costs one batched 3x3 SVD call over (B, n, 16) matrices.
With identity rotations TOF reduces to ACT's temporal ensembling with weights exp(-m i), m = 0.

``decay`` (an option beyond the paper; 0 = the paper's uniform mean): the estimate of a frame that lies i frames
into its chunk (i = 0 for the chunk's first frame) is weighted exp(-decay * i), so newer queries, which saw the
latest state and picture, count more than older ones (ACT weights the other way, oldest first). The weight depends
only on the position in the chunk, so the running sums stay.
"""

from __future__ import annotations

import math

import torch

from megohand.geometry.rotations import project_to_so3
from megohand.hand.vector import HandRotations


def _stack_R(h: HandRotations) -> torch.Tensor:
    """HandRotations (...) -> (..., 16, 3, 3): wrist first, then the 15 finger joints."""
    return torch.cat([h.wrist_R.unsqueeze(-3), h.fingers_R], dim=-3)


def chunk_weights(L: int, decay: float, like: torch.Tensor) -> torch.Tensor:
    """(L,) weights exp(-decay * i) of a chunk's frames i = 0..L-1 (all 1 for decay = 0), dtype/device of ``like``."""
    if decay < 0 or not math.isfinite(decay):
        raise ValueError(f"TOF decay must be a finite number >= 0, got {decay}")
    w = torch.exp(-decay * torch.arange(L, dtype=like.dtype, device=like.device))
    if not bool((w > 0).all()):
        raise ValueError(f"TOF decay {decay} is too large for chunks of {L} frames: the last weights underflow to 0")
    return w


def _fused(R_mean: torch.Tensor, t_mean: torch.Tensor, betas: torch.Tensor) -> HandRotations:
    """(B, n, 16, 3, 3) mean matrices, (B, n, 3) mean translations, (B, 10) betas -> HandRotations (B, n)."""
    R = project_to_so3(R_mean)  # one batched SVD call
    b = betas.unsqueeze(-2).expand(*t_mean.shape[:-1], betas.shape[-1])
    return HandRotations(R[..., 0, :, :], R[..., 1:, :, :], b, t_mean)


class TemporalOrthogonalFilter:
    """Online TOF over B sequences advanced in lockstep.

    ``add(k, chunk)`` registers a query made at frame k (estimates of frames k+1..k+L);
    ``pop(n)`` fuses and returns the next n not yet emitted frames. Frames are absolute indices;
    the first emitted frame is ``first_frame`` (default 1: frame 0 is the given initial state).

    Args:
        betas: (B, 10) shape of every output frame (from the initial state).
        first_frame: index of the first frame ``pop`` will return.
        decay: weight exp(-decay * i) for the estimate i frames into its chunk (0 = uniform, the paper's).
    """

    def __init__(self, betas: torch.Tensor, first_frame: int = 1, decay: float = 0.0):
        chunk_weights(1, decay, betas)  # checks decay
        self.betas = betas
        self.next_frame = first_frame
        self.decay = decay
        self._R: torch.Tensor | None = None  # (B, cap, 16, 3, 3) weighted running sums, frame next_frame + i
        self._t: torch.Tensor | None = None  # (B, cap, 3)
        self._w: torch.Tensor | None = None  # (cap,) sum of the estimates' weights (0: no estimate; weights are > 0)
        self._chunk_w: torch.Tensor | None = None  # (L,) chunk_weights, computed once

    def _grow(self, cap: int, like: torch.Tensor) -> None:
        B = self.betas.shape[0]
        old = 0 if self._R is None else self._R.shape[1]
        if cap <= old:
            return
        R = like.new_zeros(B, cap, 16, 3, 3)
        t = like.new_zeros(B, cap, 3)
        w = like.new_zeros(cap)
        if old:
            R[:, :old], t[:, :old], w[:old] = self._R, self._t, self._w
        self._R, self._t, self._w = R, t, w

    def add(self, k: int, chunk: HandRotations) -> None:
        """Register the chunk queried at frame k: HandRotations (B, L) = frames k+1..k+L.

        Estimates of frames already emitted are dropped (they can no longer change the output).
        """
        R, t = _stack_R(chunk), chunk.transl
        L = t.shape[-2]
        lo = k + 1 - self.next_frame  # offset of frame k+1 in the buffer
        if lo + L <= 0:
            return
        skip = max(0, -lo)
        self._grow(lo + L, t)
        if self._chunk_w is None or len(self._chunk_w) != L or self._chunk_w.dtype != t.dtype:
            self._chunk_w = chunk_weights(L, self.decay, t)
        w = self._chunk_w[skip:]
        self._R[:, lo + skip : lo + L] += R[:, skip:] * w[:, None, None, None]
        self._t[:, lo + skip : lo + L] += t[:, skip:] * w[:, None]
        self._w[lo + skip : lo + L] += w

    def pop(self, n: int = 1) -> HandRotations:
        """Fuse and emit the next n frames -> HandRotations (B, n). Raises if a frame has no estimate."""
        if self._w is None or self._w.shape[0] < n or bool((self._w[:n] == 0).any()):
            raise RuntimeError(
                f"TOF: frames {self.next_frame}..{self.next_frame + n - 1} have no estimate yet; "
                "query the policy at least every L frames (stride <= horizon)"
            )
        cnt = self._w[:n]
        out = _fused(self._R[:, :n] / cnt[:, None, None, None], self._t[:, :n] / cnt[:, None], self.betas)
        self._R, self._t, self._w = self._R[:, n:].clone(), self._t[:, n:].clone(), self._w[n:].clone()
        self.next_frame += n
        return out


def tof_offline(chunks: HandRotations, starts: list[int], num_frames: int, betas: torch.Tensor,
                decay: float = 0.0) -> HandRotations:
    """TOF over a finished set of queries (the whole sequence at once).

    Args:
        chunks: HandRotations (B, Q, L): the Q queries' chunks.
        starts: the Q query frames (chunk q estimates frames starts[q]+1 .. starts[q]+L).
        num_frames: fuse frames 1..num_frames.
        betas: (B, 10).
        decay: as ``TemporalOrthogonalFilter``'s.
    Returns:
        HandRotations (B, num_frames) for frames 1..num_frames.
    """
    R, t = _stack_R(chunks), chunks.transl  # (B, Q, L, 16, 3, 3), (B, Q, L, 3)
    B, Q, L = t.shape[:3]
    R_sum = t.new_zeros(B, num_frames, 16, 3, 3)
    t_sum = t.new_zeros(B, num_frames, 3)
    cnt = t.new_zeros(num_frames)
    weights = chunk_weights(L, decay, t)
    for q, k in enumerate(starts):
        for i in range(L):
            f = k + 1 + i  # absolute frame
            if 1 <= f <= num_frames:
                R_sum[:, f - 1] += weights[i] * R[:, q, i]
                t_sum[:, f - 1] += weights[i] * t[:, q, i]
                cnt[f - 1] += weights[i]
    if bool((cnt == 0).any()):
        missing = (cnt == 0).nonzero().flatten().add(1).tolist()
        raise ValueError(f"tof_offline: frames {missing[:5]}... have no estimate")
    return _fused(R_sum / cnt[:, None, None, None], t_sum / cnt[:, None], betas)
