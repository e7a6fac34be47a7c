"""Closed-loop generation: query a chunk policy every ``stride`` frames, fuse with TOF, feed back.

::

    h = h_0                                       # given initial state (frame 0)
    for k in 0, s, 2s, ... < T:
        a = policy.predict_chunk(image_k, text, h, depth_k)     # (B, L, 99) relative
        chunk = decode_chunk_rotations(h, a)                    # absolute frames k+1..k+L
        TOF on:  fuse every estimate of frames k+1..k+s         # uniform mean + SVD projection
        TOF off: frames k+1..k+s = the latest chunk's
        h = state of frame k+s                                  # closed loop
    betas = betas of h_0 throughout

The policy sees only the current state h and frame k's observation. ``observe(k)`` gives that
observation: the same picture for a single image, frame k of a video or of a stored episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

from megohand.hand.vector import (
    SLICE_BETAS,
    HandParams,
    HandRotations,
    decode_chunk_rotations,
    rotations_to_state,
    state_to_params,
)
from megohand.inference.tof import TemporalOrthogonalFilter

Observation = tuple[torch.Tensor, "torch.Tensor | None"]  # image uint8 (B,3,H,W), depth (B,1,H,W) m or None


@runtime_checkable
class Policy(Protocol):
    """Anything that maps an observation and the current state to a relative chunk.

    ``predict_chunk(image uint8 (B,3,H,W), instructions list[str], state (B,109), depth (B,1,H,W) | None,
    steps=K, generator=None) -> (B, L, 99)`` (layout of ``megohand.hand.vector``, un-normalised).
    ``MEgoHandPolicy`` and the baselines of ``megohand.inference.baselines`` satisfy it.
    """

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None) -> torch.Tensor: ...


def text_context(policy) -> str:
    """The text context a policy was trained with (``PolicyConfig.text_context``, read through ``ModelPolicy.model``;
    "segment" for the baselines): what ``megohand.data.windows.window_text`` composes for it."""
    return getattr(getattr(getattr(policy, "model", None), "config", None), "text_context", "segment")


@dataclass
class RolloutResult:
    """states (B, T+1, 109): frame 0 is the given initial state, frames 1..T are generated."""

    states: torch.Tensor
    queries: int

    def params(self) -> HandParams:
        """HandParams with leading shape (B, T+1)."""
        return state_to_params(self.states)


def _slice(h: HandRotations, sl: slice) -> HandRotations:
    return HandRotations(h.wrist_R[:, sl], h.fingers_R[:, sl], h.betas[:, sl], h.transl[:, sl])


@torch.no_grad()
def rollout(
    policy: Policy,
    observe: Callable[[int], Observation],
    instructions: list[str] | Callable[[int], list[str]],
    init_state: torch.Tensor,
    num_frames: int,
    stride: int = 1,
    tof: bool = True,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    tof_decay: float = 0.0,
) -> RolloutResult:
    """Generate frames 1..num_frames of B sequences in closed loop.

    Args:
        policy: a :class:`Policy`.
        observe: frame index k -> (image uint8 (B,3,H,W), depth (B,1,H,W) [m] or None).
        instructions: B task texts, or frame k -> B texts (segment-wise instructions).
        init_state: (B, 109) h_0 (its betas are kept for every frame).
        num_frames: T, frames generated after frame 0.
        stride: s, frames between queries (1 <= s <= L); each query emits s frames.
        tof: fuse overlapping chunks (True) or take the latest chunk's frames (False).
        steps: K Euler steps passed to the policy (None = its default).
        generator: torch.Generator for the policy's noise (reproducible sampling).
        progress: optional callback receiving the number of frames emitted so far.
        tof_decay: TOF weight exp(-tof_decay * i) of the estimate i frames into its chunk (0 = uniform, the
            paper's; ``megohand.inference.tof``).
    Returns:
        :class:`RolloutResult` with states (B, T+1, 109).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    state = init_state
    betas = init_state[..., SLICE_BETAS]
    filt = TemporalOrthogonalFilter(betas, first_frame=1, decay=tof_decay)
    out = [init_state[:, None]]
    k, queries = 0, 0
    kwargs = {} if steps is None else {"steps": steps}
    while k < num_frames:
        image, depth = observe(k)
        texts = instructions(k) if callable(instructions) else instructions
        action = policy.predict_chunk(image, texts, state, depth, generator=generator, **kwargs)
        queries += 1
        L = action.shape[-2]
        if stride > L:
            raise ValueError(f"stride {stride} exceeds the policy's horizon L = {L}")
        chunk = decode_chunk_rotations(state, action.to(state.dtype))
        n = min(stride, num_frames - k)
        if tof:
            filt.add(k, chunk)
            frames = filt.pop(n)
        else:
            frames = _slice(chunk, slice(0, n))
            frames.betas = betas.unsqueeze(1).expand(-1, n, -1)
        new = rotations_to_state(frames)  # (B, n, 109)
        out.append(new)
        state = new[:, -1]
        k += n
        if progress is not None:
            progress(k)
    return RolloutResult(torch.cat(out, 1), queries)

