"""The frozen text encoder's output per distinct string, computed once in training.

A frozen MiniLM in eval mode maps a string to the same hidden states every time, and a training run sees few
distinct strings (the synthetic world: about 600 instructions and referring questions over 61 000 windows). So
instead of tokenising B strings and running six layers every step, each new string is encoded once (alone in its
row, padded to ``max_tokens`` with an attention mask, which leaves its real tokens as in any padded batch) into a
device table; a batch is then one gather plus a mask built from the lengths on the host. Nothing here reads the
GPU, so the step stays without host syncs.

The table belongs to one set of encoder weights on one device: it is rebuilt when the weights move, are replaced
or change in place (their tensor version), e.g. when a checkpoint is loaded after the first step.
"""

from __future__ import annotations

import torch


class FrozenTextCache:
    """string -> row of a (N, max_tokens, H) table of a frozen encoder's last hidden states."""

    def __init__(self, max_strings: int = 4096):
        """max_strings: rows at most (MiniLM, 32 tokens, float32: 49 kB a row, 200 MB in all); a batch that would
        need more is encoded whole, as without the cache."""
        self.max_strings = int(max_strings)
        self.rows: dict[str, int] = {}
        self.table: torch.Tensor | None = None  # (N, max_tokens, H) on the encoder's device
        self.lengths = torch.zeros(0, dtype=torch.long)  # (N,) real tokens per row, on the host
        self.key: tuple | None = None
        self.encoded = 0  # strings run through the encoder (for tests and logs)

    def clear(self) -> None:
        self.rows, self.table, self.lengths, self.key = {}, None, torch.zeros(0, dtype=torch.long), None

    def lookup(self, strings: list[str], tokenizer, encoder, max_tokens: int, device) -> dict | None:
        """B strings -> {hidden (B, S, H), mask (B, S) bool, padded bool} with S the batch's longest string in
        tokens (as ``tokenizer(..., padding=True)`` gives), or None when the table is full (encode eagerly then)."""
        weight = encoder.get_input_embeddings().weight
        key = (str(device), weight.data_ptr(), weight._version)
        if key != self.key:
            self.clear()
            self.key = key
        new = [s for s in dict.fromkeys(strings) if s not in self.rows]
        if len(self.rows) + len(new) > self.max_strings:
            return None
        if new:
            enc = tokenizer(new, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
            with torch.no_grad():
                hidden = encoder(input_ids=enc["input_ids"].to(device),
                                 attention_mask=enc["attention_mask"].to(device)).last_hidden_state
            self.rows.update({s: len(self.rows) + i for i, s in enumerate(new)})
            self.table = hidden if self.table is None else torch.cat([self.table.to(hidden.dtype), hidden])
            self.lengths = torch.cat([self.lengths, enc["attention_mask"].sum(1)])
            self.encoded += len(new)
        rows = torch.tensor([self.rows[s] for s in strings], dtype=torch.long)
        lengths = self.lengths[rows]
        S = int(lengths.max())
        mask = torch.arange(S)[None] < lengths[:, None]
        hidden = self.table.index_select(0, rows.to(device, non_blocking=True))[:, :S]
        return {"hidden": hidden, "mask": mask.to(device, non_blocking=True), "padded": not bool(mask.all())}
