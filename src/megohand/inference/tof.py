"""Temporal Orthogonal Filtering (TOF): fuse overlapping chunk estimates of the same frame.

Every query at frame k yields estimates of frames k+1..k+L. For each output frame TOF takes the
**uniform** mean of all its estimates: translations averaged directly, rotation matrices (wrist and
the 15 finger joints) averaged entry-wise and projected back onto SO(3) by SVD with the determinant
fix (``megohand.geometry.rotations.project_to_so3``: the chordal L2 mean). Betas are not fused:
they come from the initial state (the model never predicts them).

Uniform weights make the online form a running sum: memory is O(L) per sequence whatever the
sequence length, and one output step costs one batched 3x3 SVD call over (B, n, 16) matrices.
With identity rotations TOF reduces to ACT's temporal ensembling with weights exp(-m i), m = 0.
"""

from __future__ import annotations

import torch

from megohand.geometry.rotations import project_to_so3
from megohand.hand.vector import HandRotations


def _stack_R(h: HandRotations) -> torch.Tensor:
    """HandRotations (...) -> (..., 16, 3, 3): wrist first, then the 15 finger joints."""
    return torch.cat([h.wrist_R.unsqueeze(-3), h.fingers_R], dim=-3)


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
    """

    def __init__(self, betas: torch.Tensor, first_frame: int = 1):
        self.betas = betas
        self.next_frame = first_frame
        self._R: torch.Tensor | None = None  # (B, cap, 16, 3, 3) running sums, frame next_frame + i
        self._t: torch.Tensor | None = None  # (B, cap, 3)
        self._n: torch.Tensor | None = None  # (cap,) number of estimates

    def _grow(self, cap: int, like: torch.Tensor) -> None:
        B = self.betas.shape[0]
        old = 0 if self._R is None else self._R.shape[1]
        if cap <= old:
            return
        R = like.new_zeros(B, cap, 16, 3, 3)
        t = like.new_zeros(B, cap, 3)
        n = torch.zeros(cap, dtype=torch.long, device=like.device)
        if old:
            R[:, :old], t[:, :old], n[:old] = self._R, self._t, self._n
        self._R, self._t, self._n = R, t, n

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
        self._R[:, lo + skip : lo + L] += R[:, skip:]
        self._t[:, lo + skip : lo + L] += t[:, skip:]
        self._n[lo + skip : lo + L] += 1

    def pop(self, n: int = 1) -> HandRotations:
        """Fuse and emit the next n frames -> HandRotations (B, n). Raises if a frame has no estimate."""
        if self._n is None or self._n.shape[0] < n or bool((self._n[:n] == 0).any()):
            raise RuntimeError(
                f"TOF: frames {self.next_frame}..{self.next_frame + n - 1} have no estimate yet; "
                "query the policy at least every L frames (stride <= horizon)"
            )
        cnt = self._n[:n].to(self._t.dtype)
        out = _fused(self._R[:, :n] / cnt[:, None, None, None], self._t[:, :n] / cnt[:, None], self.betas)
        self._R, self._t, self._n = self._R[:, n:].clone(), self._t[:, n:].clone(), self._n[n:].clone()
        self.next_frame += n
        return out


def tof_offline(chunks: HandRotations, starts: list[int], num_frames: int, betas: torch.Tensor) -> HandRotations:
    """TOF over a finished set of queries (the whole sequence at once).

    Args:
        chunks: HandRotations (B, Q, L): the Q queries' chunks.
        starts: the Q query frames (chunk q estimates frames starts[q]+1 .. starts[q]+L).
        num_frames: fuse frames 1..num_frames.
        betas: (B, 10).
    Returns:
        HandRotations (B, num_frames) for frames 1..num_frames.
    """
    R, t = _stack_R(chunks), chunks.transl  # (B, Q, L, 16, 3, 3), (B, Q, L, 3)
    B, Q, L = t.shape[:3]
    R_sum = t.new_zeros(B, num_frames, 16, 3, 3)
    t_sum = t.new_zeros(B, num_frames, 3)
    cnt = t.new_zeros(num_frames)
    for q, k in enumerate(starts):
        for i in range(L):
            f = k + 1 + i  # absolute frame
            if 1 <= f <= num_frames:
                R_sum[:, f - 1] += R[:, q, i]
                t_sum[:, f - 1] += t[:, q, i]
                cnt[f - 1] += 1
    if bool((cnt == 0).any()):
        missing = (cnt == 0).nonzero().flatten().add(1).tolist()
        raise ValueError(f"tof_offline: frames {missing[:5]}... have no estimate")
    return _fused(R_sum / cnt[:, None, None, None], t_sum / cnt[:, None], betas)
