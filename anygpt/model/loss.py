"""The training loss: next-token cross-entropy per position over the labelled tokens.

Kept per position (not reduced) so the trainer can split it by dataset, modality and direction and
the generator can score candidates with the same function.
"""

from __future__ import annotations

import torch

from anygpt.vocab import IGNORE_INDEX


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token loss ``(B, T-1)`` (0 where no label) and the validity mask.

    ``labels`` are aligned with the inputs (Hugging Face convention): position ``t`` predicts
    ``labels[t + 1]``; ``IGNORE_INDEX`` marks positions without a label."""
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1).clamp(min=0), reduction="none"
    ).view_as(target)
    return loss * valid, valid
