"""Base class shared by every segmentation model: logits out, ``predict`` for probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["ModelOutput", "SegmentationModel"]


@dataclass
class ModelOutput:
    """What ``forward(x, return_aux=True)`` returns.

    Attributes:
        logits: main prediction (N, num_classes, H, W) at the input size.
        aux_logits: side predictions for deep supervision, any resolution, deepest first or as documented.
        features: intermediate feature maps a loss needs (e.g. feature distillation), by name.
    """

    logits: Tensor
    aux_logits: tuple[Tensor, ...] = ()
    features: dict[str, Tensor] = field(default_factory=dict)


class SegmentationModel(nn.Module):
    """A model whose ``forward`` returns logits (N, num_classes, H, W) at the input size.

    Subclasses set ``stride`` (input H and W must be multiples of it) and implement ``forward_output``;
    ``forward(x)`` returns the logits, ``forward(x, return_aux=True)`` the full :class:`ModelOutput`.
    """

    stride: int = 1

    def forward_output(self, x: Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | ModelOutput:
        self.check_input(x)
        out = self.forward_output(x)
        return out if return_aux else out.logits

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected input (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {self.stride}, got {h}x{w}; pad or resize the input"
            )

    @torch.inference_mode()
    def predict(self, x: Tensor) -> Tensor:
        """Foreground probabilities (sigmoid of the logits), in eval mode, without gradients."""
        if self.training:
            self.eval()
        return torch.sigmoid(self(x))
