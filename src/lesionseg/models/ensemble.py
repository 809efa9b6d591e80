"""An ensemble of trained segmentation models run as one model (Lakshminarayanan et al. 2017, "Simple and scalable
predictive uncertainty estimation using deep ensembles"; nnU-Net's fold ensembles average probabilities the same way).

Our reading: members may differ in architecture, input size and normalisation. Each member sees the ensemble's
input undone to [0, 1] units, normalised its own way and resized (bilinear, half-pixel centres) to its own working
size; its foreground probability is resized back to the input's size; the probabilities are averaged (or weighted);
the output is the logit of that average, so that temperature, threshold, post-processing and flip TTA downstream
work as they do for one model. The graph is plain tensor arithmetic and exports to ONE ONNX graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hub import EnsembleRecord, ModelRecord

__all__ = ["EnsembleModel"]


class EnsembleModel(nn.Module):
    """Run every member at its own input size and return the logit of their combined foreground probability.

    Args:
        members: segmentation models returning logits (N, >=1, h, w); the first channel is the foreground.
        member_sizes: each member's working size (H, W).
        member_mean: each member's normalisation mean ([0, 1] units, one value per input channel).
        member_std: each member's normalisation std.
        mean: normalisation mean of the ensemble's own input.
        std: its std.
        weights: each member's weight (None: equal); normalised to sum 1.
        eps: probabilities are clamped to [eps, 1 - eps] before the logit, so that it stays finite.

    Shapes:
        input (N, C, H, W) normalised with ``mean``/``std``, any H, W; output logits (N, 1, H, W).
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        member_sizes: Sequence[Sequence[int]],
        member_mean: Sequence[Sequence[float]],
        member_std: Sequence[Sequence[float]],
        mean: Sequence[float],
        std: Sequence[float],
        weights: Sequence[float] | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        n = len(members)
        if n < 1:
            raise ValueError("members: an ensemble needs at least one member")
        if not (len(member_sizes) == len(member_mean) == len(member_std) == n):
            raise ValueError(
                f"members: {n} members but {len(member_sizes)} sizes, {len(member_mean)} means, {len(member_std)} stds"
            )
        weights = [1.0] * n if weights is None else [float(w) for w in weights]
        if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights: need {n} non-negative weights, not all 0, got {weights}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps: must be in (0, 0.5), got {eps}")
        self.members = nn.ModuleList(members)
        self.member_sizes = tuple((int(s[0]), int(s[1])) for s in member_sizes)
        self.weights = tuple(w / sum(weights) for w in weights)
        self.eps = eps
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        for i, (m, s) in enumerate(zip(member_mean, member_std)):
            self.register_buffer(
                f"member_mean_{i}", torch.tensor(list(m), dtype=torch.float32).view(1, -1, 1, 1), persistent=False
            )
            self.register_buffer(
                f"member_std_{i}", torch.tensor(list(s), dtype=torch.float32).view(1, -1, 1, 1), persistent=False
            )

    @classmethod
    def from_records(
        cls, members: Sequence[nn.Module], records: Sequence[ModelRecord], ensemble: EnsembleRecord
    ) -> EnsembleModel:
        """The ensemble of loaded ``members`` as their records and the ensemble record describe them."""
        channels = ensemble.in_channels

        def stats(values: Sequence[float]) -> list[float]:
            # A 3-value mean with a 1-channel model keeps its first value, as the training dataset does.
            return list(values[:channels]) if len(values) >= channels else list(values) * channels

        return cls(
            members,
            [r.image_size for r in records],
            [stats(r.mean) for r in records],
            [stats(r.std) for r in records],
            stats(ensemble.mean),
            stats(ensemble.std),
            weights=ensemble.member_weights(),
        )

    def member_probabilities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's foreground probability (N, 1, H, W) at the input's size (T = 1)."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        raw = x * self.std + self.mean  # [0, 1] units
        out = []
        for i, member in enumerate(self.members):
            xm = (raw - getattr(self, f"member_mean_{i}")) / getattr(self, f"member_std_{i}")
            own = self.member_sizes[i]
            if own != size:
                xm = F.interpolate(xm, size=own, mode="bilinear", align_corners=False)
            p = torch.sigmoid(member(xm)[:, :1].float())
            if own != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            out.append(p)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the combined probability (N, 1, H, W)."""
        probs = self.member_probabilities(x)
        p = probs[0] * self.weights[0]
        for w, q in zip(self.weights[1:], probs[1:]):
            p = p + q * w
        p = p.clamp(self.eps, 1.0 - self.eps)
        return torch.log(p) - torch.log1p(-p)
