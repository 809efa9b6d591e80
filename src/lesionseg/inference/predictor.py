"""Predict lesion probabilities and masks for images of any size with a trained model (eager or onnxruntime).

With a record that carries them (see :mod:`lesionseg.inference.trust`), probabilities are temperature-scaled and
every :meth:`Predictor.predict` result says how far to trust it: a predicted Dice, ``low_confidence``, and whether
the image is unlike the model's training images.

Reading, resizing, normalising, the network call of the onnxruntime backend, resizing back and post-processing are
numpy and OpenCV: with ``backend="onnxruntime"`` this module never imports torch (nor does the rest of the inference
path), so a process that only predicts starts in a fraction of the time ``import torch`` takes. torch is imported
when the torch backend is chosen, and by :meth:`Predictor.predict_dataset` (which yields tensors to the evaluator).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..data.base import channel_stats, load_case, normalize_image, resize_pair
from ..data.io import read_image
from ..models.hub import EnsembleRecord, ModelRecord, load_model, load_record, resolve_checkpoint
from ..runtime import PRECISIONS, autocast_context, cuda_possible, resolve_device
from .postprocess import apply_postprocessing, check_postprocess_steps
from .trust import (
    ImageDescription,
    QualityEstimator,
    TrustAssessment,
    apply_temperature,
    calibrated_threshold,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data.dataset import SegmentationDataset

__all__ = ["BACKENDS", "Prediction", "Predictor", "choose_backend"]

BACKENDS = ("torch", "onnxruntime")


def choose_backend(
    backend: str, device: str = "cpu", precision: str = "fp32", has_graph: bool = False, channels_last: bool = False
) -> str:
    """The backend ``auto`` stands for: ``onnxruntime`` where it can run the request (CPU, fp32, the model has an
    ONNX graph, onnxruntime installed), else ``torch``. ``torch`` and ``onnxruntime`` are returned as given.

    Args:
        backend: ``auto``, ``torch`` or ``onnxruntime``.
        device: the requested device (``auto`` counts as CPU only where :func:`cuda_possible` says no GPU can be).
        precision: ``fp32`` or another (which only the torch backend runs).
        has_graph: whether the model's ONNX graph exists already (shipped, or exported into the cache).
        channels_last: the torch memory format was asked for.
    """
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend must be auto or one of {BACKENDS}, got {backend!r}")
        return backend
    device = str(device).strip().lower()
    cpu = device == "cpu" or (device == "auto" and not cuda_possible())
    usable = cpu and precision == "fp32" and has_graph and not channels_last
    return "onnxruntime" if usable and importlib.util.find_spec("onnxruntime") is not None else "torch"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32 (exp overflows to inf for logits below -88, which gives 0 as it should)."""
    with np.errstate(over="ignore"):
        out = np.exp(-x, dtype=np.float32)
    out += 1.0
    return np.reciprocal(out, out=out)


@dataclass(frozen=True)
class Prediction:
    """One image's prediction at its own size.

    The mask is cut from the probability at ``T = 1`` (``raw_prob``), where the model's threshold is defined; the
    calibrated probability, a second pass over every pixel, is computed only when :attr:`prob` or
    :meth:`small_prob` is read.

    Attributes:
        mask: binary mask uint8 {0, 1} (H, W), post-processed as configured.
        trust: what the prediction says about itself (:class:`~lesionseg.inference.trust.TrustAssessment`).
        raw_prob: foreground probability float32 (H, W) at ``T = 1`` (the model's own sigmoid, resized).
        temperature: the calibration temperature of :attr:`prob`.
    """

    mask: np.ndarray
    trust: TrustAssessment
    raw_prob: np.ndarray
    temperature: float = 1.0

    @cached_property
    def prob(self) -> np.ndarray:
        """Foreground probability float32 (H, W), temperature-scaled when the model carries a temperature."""
        return apply_temperature(self.raw_prob, self.temperature)

    def small_prob(self, max_side: int) -> np.ndarray:
        """:attr:`prob` reduced (area-averaged at ``T = 1``, then calibrated) so that its longest side is at most
        ``max_side``; the full-size map is not computed."""
        h, w = self.raw_prob.shape
        scale = min(1.0, max_side / max(h, w))
        if scale >= 1.0:
            return self.prob
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return apply_temperature(cv2.resize(self.raw_prob, size, interpolation=cv2.INTER_AREA), self.temperature)


class Predictor:
    """Resize to the model's working size, predict, resize the probabilities back to the image's own size.

    Args:
        model: a segmentation model returning logits, or (``backend="onnxruntime"``) the path of an exported
            ``.onnx`` file; a module given with that backend is exported first.
        image_size: working size (H, W) the model was trained at.
        mean: normalisation mean in [0, 1] units (a 3-value mean with a 1-channel model keeps its first value, as
            the training dataset did).
        std: normalisation std in [0, 1] units.
        threshold: probability threshold of the binary mask.
        in_channels: 3 (RGB) or 1 (grayscale).
        precision: ``fp32``, ``bf16`` or (CUDA) ``fp16`` (torch backend; onnxruntime runs ``fp32``).
        tta: average over horizontal and vertical flips.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N`` or a torch device (torch backend;
            onnxruntime runs on the CPU).
        postprocess: mask post-processing steps (see :mod:`lesionseg.inference.postprocess`), usually the ones the
            checkpoint record chose on validation data.
        backend: ``torch`` (eager) or ``onnxruntime``.
        channels_last: the eager model's memory format: channels-last (NHWC) or contiguous (NCHW); None (default)
            chooses channels-last on the CPU, where the convolutions run 1.5x faster in it (``perf/
            predict_latency.py``), and contiguous elsewhere. onnxruntime takes contiguous NCHW input.
        threads: intra-op threads of the onnxruntime session (None: torch's count when torch is loaded, else
            ``OMP_NUM_THREADS``, else the CPUs); the torch backend uses ``torch.set_num_threads``, which is global.
        temperature: logits are divided by it before the sigmoid (calibrated probabilities). ``threshold`` keeps
            its meaning at ``T = 1``: masks are the same at any temperature (they are cut at ``T = 1``).
        quality: the per-image quality estimator fitted on validation ids for this predictor's mode (``single``
            without ``tta``, ``flip`` with it; :meth:`from_record` chooses); None = no ``predicted_dice``. A
            ``flip`` estimator (a record from before the modes) makes :meth:`predict` run the two flipped passes
            even without ``tta``.
        description: the training images' description for out-of-distribution checks; None = no check.
    """

    def __init__(
        self,
        model: nn.Module | str | Path,
        image_size: Sequence[int] = (256, 256),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        threshold: float = 0.5,
        in_channels: int = 3,
        precision: str = "fp32",
        tta: bool = False,
        device: str | torch.device = "cpu",
        postprocess: Sequence[str] = (),
        backend: str = "torch",
        channels_last: bool | None = None,
        threads: int | None = None,
        temperature: float = 1.0,
        quality: QualityEstimator | None = None,
        description: ImageDescription | None = None,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        if backend == "onnxruntime" and (precision != "fp32" or channels_last):
            raise ValueError(
                "the onnxruntime backend runs fp32 in its own memory format; precision and channels_last are for the "
                "torch backend"
            )
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean, self.std = channel_stats(mean, std, in_channels)
        self.threshold = threshold
        self.temperature = float(temperature)
        # The cut on temperature-scaled probabilities that gives the mask the threshold gives at T = 1.
        self.prob_threshold = calibrated_threshold(threshold, self.temperature)
        self.quality = quality
        self.description = description
        self.in_channels = in_channels
        self.precision = precision
        self.tta = tta
        self.postprocess = tuple(postprocess)
        apply_postprocessing(np.zeros((1, 1), np.uint8), self.postprocess)  # validates the step names
        self.backend = backend
        self.session = None
        self.model: nn.Module | None = None
        self.record: ModelRecord | EnsembleRecord | None = None  # the checkpoint (or ensemble) record
        self._device = "cpu"  # onnxruntime's; the torch backend resolves its own below
        if backend == "onnxruntime":
            from .export import onnx_session

            self.channels_last = False
            if isinstance(model, (str, Path)):
                self.session = onnx_session(model, threads)
            else:
                import tempfile

                from .export import export_onnx

                with tempfile.TemporaryDirectory() as tmp:
                    path = export_onnx(model, Path(tmp) / "model.onnx", self.image_size, in_channels)
                    self.session = onnx_session(path, threads)
            self._input_name = self.session.get_inputs()[0].name
        else:
            import torch

            if not isinstance(model, torch.nn.Module):
                raise TypeError("the torch backend needs an nn.Module; an .onnx file needs backend='onnxruntime'")
            self._device = resolve_device(device)
            autocast_context(precision, self._device)  # fp16 only on CUDA
            self.channels_last = self._device.type == "cpu" if channels_last is None else bool(channels_last)
            memory = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model = model.eval().to(self._device, memory_format=memory)

    @property
    def device(self) -> torch.device:
        """The torch device of the eager model (the CPU for onnxruntime); reading it imports torch."""
        import torch

        return torch.device(self._device)

    # ------------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_record(
        cls,
        model: nn.Module | str | Path,
        record: ModelRecord | EnsembleRecord,
        backend: str = "torch",
        **overrides: Any,
    ) -> Predictor:
        """A predictor over ``model`` configured by its record: working size, normalisation, channels, threshold,
        post-processing, temperature, quality estimator and training-image description.

        ``overrides`` replace record values (``threshold``, ``postprocess``, ``temperature``, ...) or set the rest
        (``precision``, ``tta``, ``device``, ...); None values are ignored, so ``threshold=None`` means the record's
        and ``threshold=0.0`` is refused as out of range rather than replaced.

        The quality curve is the record's one for the mode the predictor runs in (``flip`` with ``tta``, else
        ``single``); a record holding only the other mode's curve gives that one (it then reads its own passes).
        """
        quality = None
        if record.quality is not None:
            wanted = "flip" if overrides.get("tta") else "single"
            mode = wanted if record.quality.curve(wanted) is not None else ("single", "flip")[wanted == "single"]
            curve = record.quality.curve(mode)
            assert curve is not None
            quality = QualityEstimator.from_dict(curve.to_dict(), mode=mode)
        kwargs: dict[str, Any] = {
            "image_size": record.image_size,
            "mean": record.mean,
            "std": record.std,
            "threshold": record.threshold,
            "in_channels": record.in_channels,
            "postprocess": record.postprocess.steps if record.postprocess else (),
            "temperature": 1.0 if record.temperature is None else record.temperature,
            "quality": quality,
            "description": (
                ImageDescription.from_dict(record.image_description.to_dict()) if record.image_description else None
            ),
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        predictor = cls(model, backend=backend, **kwargs)
        predictor.record = record
        return predictor

    @classmethod
    def from_checkpoint(cls, path: str | Path, backend: str = "torch", **overrides: Any) -> Predictor:
        """A predictor configured from a checkpoint's record, or a shipped tag (``"skin"``); see :meth:`from_record`.

        ``backend="onnxruntime"`` runs the model's ONNX graph: the one shipped with a shipped model, else the user
        cache's, exported there once (the only step that imports torch). ``backend="auto"`` chooses onnxruntime
        where the graph exists already and the request is one it runs (:func:`choose_backend`), else torch.
        """
        stem = resolve_checkpoint(path)
        record = load_record(stem)
        if record.postprocess:
            check_postprocess_steps(record.postprocess.steps, f"{stem}.json: postprocess.steps")
        if backend == "auto":
            from .export import cached_onnx_path, shipped_onnx_path

            has_graph = shipped_onnx_path(stem) is not None or cached_onnx_path(stem, record).is_file()
            backend = choose_backend(
                backend,
                str(overrides.get("device") or "cpu"),
                overrides.get("precision") or "fp32",
                has_graph,
                bool(overrides.get("channels_last")),
            )
        if backend == "onnxruntime":
            from .export import cached_onnx_for_checkpoint

            return cls.from_record(cached_onnx_for_checkpoint(stem, record), record, backend=backend, **overrides)
        model, record = load_model(stem)
        return cls.from_record(model, record, backend=backend, **overrides)

    @classmethod
    def from_pretrained(cls, tag: str = "skin", backend: str = "torch", **overrides: Any) -> Predictor:
        """A predictor over a model shipped in the package: ``"skin"`` (dermoscopy) or ``"polyp"`` (endoscopy)."""
        from ..models.hub import pretrained_stem

        return cls.from_checkpoint(pretrained_stem(tag), backend=backend, **overrides)

    # ------------------------------------------------------------------------------------------------ prediction
    def working_image(self, image: np.ndarray) -> np.ndarray:
        """The uint8 image (h, w, C) at the working size, as the network sees it before normalisation (also what
        the out-of-distribution statistics read)."""
        return resize_pair(image, None, self.image_size)[0]

    def _to_batch(self, images: Sequence[np.ndarray], working: bool = False) -> np.ndarray:
        """Normalised float32 (N, C, h, w), C-contiguous, at the working size; one code path with the training
        dataset (``working``: the images are at the working size already)."""
        return np.stack(
            [normalize_image(im if working else self.working_image(im), self.mean, self.std) for im in images]
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One network call: logits float32 (N, 1, h, w) for a C-contiguous normalised batch."""
        if self.session is not None:
            (out,) = self.session.run(None, {self._input_name: x})
            return out
        import torch

        assert self.model is not None
        with torch.inference_mode(), autocast_context(self.precision, self._device):
            t = torch.from_numpy(x)
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            return self.model(t.to(self._device, non_blocking=True)).float().cpu().numpy()

    def _passes(self, x: np.ndarray, flips: bool) -> np.ndarray:
        """Logits float32 (P, N, 1, h, w): the plain pass and, with ``flips``, the horizontally and vertically
        flipped passes flipped back (T = 1)."""
        passes = [self._run(x)]
        if flips:
            passes.append(self._run(np.ascontiguousarray(x[..., ::-1]))[..., ::-1])
            passes.append(self._run(np.ascontiguousarray(x[..., ::-1, :]))[..., ::-1, :])
        return np.stack(passes)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Logits float32 (N, 1, h, w) at the working size, flip-averaged with TTA (T = 1)."""
        return self._passes(x, True).mean(0) if self.tta else self._run(x)

    def pass_logits(self, x: torch.Tensor, flips: bool | None = None) -> torch.Tensor:
        """Logits (P, N, 1, h, w) of the plain pass and, with ``flips`` (default: ``tta``), the horizontally and
        vertically flipped passes flipped back, for a normalised batch at the working size (T = 1)."""
        import torch

        flips = self.tta if flips is None else flips
        return torch.from_numpy(self._passes(np.ascontiguousarray(x.cpu().numpy()), flips))

    def logits_at_working_size(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, h, w) for a normalised batch at the working size (flip-averaged with TTA; T = 1)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self._logits(np.ascontiguousarray(x.cpu().numpy()))))

    @staticmethod
    def _native(probs: np.ndarray, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Working-size maps (N, h, w) resized to each image's own size, bilinear with half-pixel centres (as
        F.interpolate(align_corners=False), at a fraction of its cost)."""
        out = []
        for p, im in zip(probs, images):
            h, w = im.shape[:2]
            out.append(p if p.shape == (h, w) else cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
        return out

    def _cut(self, raw_prob: np.ndarray, postprocess: bool = True) -> np.ndarray:
        """The mask of a ``T = 1`` probability map: ``threshold`` as the model defines it, then post-processing."""
        mask = (raw_prob > self.threshold).view(np.uint8)
        return apply_postprocessing(mask, self.postprocess) if postprocess else mask

    def predict_proba(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Foreground probabilities float32 (H, W) at each image's own size, for uint8 (H, W, C) images.

        Temperature-scaled when the predictor has a temperature (cut them with :meth:`mask_from_proba`). The
        temperature is applied after resizing, pointwise, so the mask cut at ``prob_threshold`` is the ``T = 1``
        mask.
        """
        raw = self._native(_sigmoid(self._logits(self._to_batch(images))[:, 0]), images)
        return [apply_temperature(p, self.temperature) for p in raw]

    def mask_from_proba(self, prob: np.ndarray, postprocess: bool = True) -> np.ndarray:
        """Threshold a probability map of :meth:`predict_proba` and apply the post-processing steps (unless
        ``postprocess`` is False). The cut is ``prob_threshold``, the model's threshold carried to its temperature."""
        mask = (prob > self.prob_threshold).view(np.uint8)
        return apply_postprocessing(mask, self.postprocess) if postprocess else mask

    def quality_inputs(self, passes: np.ndarray) -> list[np.ndarray]:
        """The logits (h, w) the quality estimate reads, from one image's passes (P, h, w) as :meth:`_passes`
        gives them: every pass for a ``flip`` estimator, else the one map the mask is cut from (flip-averaged with
        ``tta``)."""
        if self.quality is not None and self.quality.mode == "flip":
            return list(passes)
        return [passes.mean(0) if self.tta else passes[0]]

    def predict(self, images: Sequence[np.ndarray], postprocess: bool = True) -> list[Prediction]:
        """Mask, probability and trust assessment of each uint8 (H, W, C) image, at its own size.

        Only the passes the mode needs run: the plain pass, or with ``tta`` the plain and two flipped passes. The
        quality estimate is computed at the working size, where it was fitted: the expected Dice of the working
        size mask under those passes' probabilities (:meth:`QualityEstimator.signal`). The out-of-distribution
        score reads the working-size image. The calibrated probability at the image's size is left to
        :attr:`Prediction.prob`, which computes it when read.
        """
        work = [self.working_image(im) for im in images]
        flips = self.tta or (self.quality is not None and self.quality.mode == "flip")
        passes = self._passes(self._to_batch(work, working=True), flips=flips)
        logits = passes.mean(0) if self.tta else passes[0]
        small_probs = _sigmoid(logits[:, 0])
        results = []
        for i, raw in enumerate(self._native(small_probs, images)):
            mask = self._cut(raw, postprocess)
            predicted_dice = low = score = ood = None
            if self.quality is not None:
                small = self._cut(small_probs[i], postprocess)
                signal = self.quality.signal(self.quality_inputs(passes[:, i, 0]), small)
                predicted_dice = float(self.quality.predict(signal))
                low = self.quality.is_low_confidence(predicted_dice)
            if self.description is not None:
                score = self.description.score_image(work[i])
                ood = self.description.is_out_of_distribution(score)
            trust = TrustAssessment(bool(mask.any()), predicted_dice, low, score, ood)
            results.append(Prediction(mask, trust, raw, self.temperature))
        return results

    def predict_mask(self, images: Sequence[np.ndarray], postprocess: bool = True) -> list[np.ndarray]:
        """Binary masks uint8 {0, 1} (H, W) at each image's own size, post-processed as configured (cut at
        ``T = 1``, without the calibrated probabilities)."""
        raw = self._native(_sigmoid(self._logits(self._to_batch(images))[:, 0]), images)
        return [self._cut(p, postprocess) for p in raw]

    def predict_dataset(
        self, dataset: SegmentationDataset, native: bool = False, batch_size: int = 16, progress: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """Yield ``(mask uint8 (B, 1, h, w), truth uint8 (B, 1, h, w), ids)`` over a dataset's cases, post-processed.

        At the working size (default) the dataset's resized, normalised batches go through the model ``batch_size``
        at a time, and the masks compare with the dataset's resized truths. With ``native`` each case is read at its
        own resolution and predicted alone (:meth:`predict_mask`), its mask compared with the original truth.

        Raises:
            ValueError: a dataset prepared otherwise than this predictor's model expects (size, channels,
                normalisation) or one that augments.
        """
        import torch
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        if native:
            for case in tqdm(dataset.cases, desc="evaluate (native)", disable=not progress, leave=False):
                image, truth = load_case(case, self.in_channels)
                mask = self.predict_mask([image])[0]
                yield (
                    torch.from_numpy(mask)[None, None],
                    torch.from_numpy(truth.astype(np.uint8))[None, None],
                    [case.id],
                )
            return
        prepared = (dataset.size, dataset.in_channels, dataset.mean.tolist(), dataset.std.tolist())
        expected = (self.image_size, self.in_channels, self.mean.tolist(), self.std.tolist())
        if prepared != expected or dataset.transform is not None:
            raise ValueError(
                f"dataset prepared as (size, channels, mean, std) = {prepared}"
                + (" with augmentation" if dataset.transform is not None else "")
                + f"; this predictor's model expects {expected} without augmentation"
            )
        pin = self.session is None and self.device.type == "cuda"
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=pin)
        for x, y, ids in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            mask = (torch.sigmoid(self.logits_at_working_size(x)) > self.threshold).to(torch.uint8)
            if self.postprocess:
                mask = torch.from_numpy(np.stack([apply_postprocessing(m[0].numpy(), self.postprocess) for m in mask]))
                mask = mask[:, None]
            yield mask, y.to(torch.uint8), list(ids)

    def predict_files(self, paths: Iterable[str | Path]) -> Iterable[tuple[Path, np.ndarray, np.ndarray]]:
        """Yield ``(path, image, probability)`` per file, one image at a time (images differ in size).

        Raises:
            ImageReadError: a file cannot be read (callers that must go on catch it per file).
        """
        for path in paths:
            image = read_image(path, self.in_channels)
            yield Path(path), image, self.predict_proba([image])[0]
