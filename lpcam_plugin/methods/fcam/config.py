"""F-CAM hyper-parameters and the VOC / COCO presets (docs/design/fcam-spec.md; Belharbi et al., WACV 2022).

Each default names its source: *paper* (the WACV text), *reference* (the authors' code, as
the spec reads it), *spec* (the spec's choice for this package) or *ours*.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from lpcam_plugin.core.settings import MethodSettings, is_int
from lpcam_plugin.methods.fcam.crf import CRF_KERNELS

#: The value of a seed setting that :class:`~lpcam_plugin.FCAM` derives from the data.
AUTO = "auto"
#: Optimisers :class:`FCAMConfig.optimizer` accepts.
OPTIMIZERS = ("sgd", "adam")

#: The paper's CRF kernel width, sigma_xy = 100 pixels on its 224-pixel images (``crf_sigma_xy="auto"``
#: keeps this reach relative to the image side).
PAPER_SIGMA_XY = 100.0
PAPER_IMAGE_SIDE = 224
#: The presets' seed budget in image-steps: the preset's epochs over its dataset, one seed per region
#: and step (reference code): VOC train_aug's 10,582 images x 10 epochs, COCO train2014's 82,081 x 3.
VOC_REFERENCE_IMAGE_STEPS = 10 * 10_582
COCO_REFERENCE_IMAGE_STEPS = 3 * 82_081

#: ImageNet normalisation on the 0-255 scale, the one IRN, AMN, EDAM and MCTformer feed their nets.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class FCAMConfig(MethodSettings):
    """Every knob of F-CAM; defaults are the VOC preset.

    Decoder and optimisation:
        decoder_channels: output widths of the decoder's blocks, deepest first; a decoder with
            more blocks repeats the last width (ours: the usual U-Net schedule 256 ... 16).
        optimizer: ``"sgd"`` (paper) or ``"adam"``.
        learning_rate: 0.01 (paper, with SGD).
        momentum: SGD momentum, 0.9 (ours; the paper does not state it).
        weight_decay: 1e-4 (ours).
        epochs: passes over the loader: 10 on VOC, 3 on COCO (ours; the paper trains 50 epochs
            on CUB's 6k images and 10 on OpenImages' 30k, so about 300k image-steps; VOC aug has
            10.6k images, COCO 82k). Fewer epochs or a smaller dataset see fewer seeds; see
            ``reference_image_steps``.

    Loss weights (the total is ``seg_weight * pCE + crf_weight * CRF + size_weight * size``):
        seg_weight: alpha, the partial cross-entropy's weight, 1.0 (paper: chosen in {1, 0.1};
            "large values such as 1 do not harm").
        crf_weight: lambda, 5.0 (paper's 2e-9, rescaled, ours): the paper sums the energy over
            all N^2 pixel pairs of a 224 x 224 image; :func:`~lpcam_plugin.methods.fcam.crf.crf_loss`
            averages it over the pairs it visits, so 2e-9 * 224^4 = 5.03 gives the paper's
            weight at the paper's image size.
        size_weight: weight of the absolute-size term, 0.1 (spec).

    CRF (a Gaussian bilateral kernel on RGB + position, Tang et al. 2018):
        crf_sigma_rgb: 15 (paper, on 0-255 colours).
        crf_sigma_xy: ``"auto"`` (ours, both presets): the paper's 100 pixels at its 224-pixel
            images, scaled to the longer side of the loader's images (``100 * side / 224``: the
            same reach relative to the image); or a number in full-resolution pixels. Either is
            scaled with the grid the energy is evaluated on.
        crf_scale: window kernel only: the energy is evaluated on the image and the maps resized by this factor,
            0.5 (reference's ``DenseCRFLoss`` default; its run configs use 1.0).
        crf_radius: window kernel only: the kernel is truncated to a ``(2r + 1)^2`` window at the evaluation scale,
            5 (ours: an 11 x 11 window at half size covers 22 x 22 full-size pixels).
        crf_kernel: ``"dense"`` (every pair, as the paper's kernel, which reaches across the image:
            sigma_xy 100 at 224 pixels; on the largest grid of at most ``crf_dense_pixels`` pixels,
            ``crf_scale`` and ``crf_radius`` unused) or ``"window"`` (the truncated kernel above).
            Dense measured ahead of the window for both sources on both benchmark networks
            (docs/methods/fcam.md), so it is the default.
        crf_dense_pixels: the dense kernel's grid bound, 1024 (32 x 32; ``W`` is N^2 per image).

    Size term (extended log-barrier, Kervadec et al. 2019):
        elb_t0, elb_t_growth, elb_t_max: ``t = min(t0 * growth ** epoch, t_max)``: 1, 1.01
            per epoch, 10 (paper).

    Seeds (see :mod:`~lpcam_plugin.methods.fcam.seeds`):
        bg_fraction: ``"auto"`` (ours, both presets): the background candidates are the pixels
            below the Otsu threshold of the max over the present classes' maps, eroded like the
            foreground, so the data decides how much is background; or a number, the lowest
            fraction of that max that may be background (the spec's 0.1 is the paper's CUB value,
            where birds fill the image; the paper tunes it in [0.1, 0.7] on a validation set).
        fg_samples: foreground pixels sampled per (image, present class) and step, 1
            (reference code), times the budget factor of ``reference_image_steps``; None seeds
            every candidate pixel.
        bg_samples: background pixels sampled per image and step, 1 (reference), times the same
            factor; None: all.
        reference_image_steps: the seed budget the preset is made for, in image-steps (epochs x
            images; VOC 10 x 10,582, COCO 3 x 82,081). ``fit`` keeps the number of seed pixels
            the decoder sees: on a run of fewer image-steps it samples
            ``round(reference_image_steps / (epochs x images))`` times ``fg_samples`` and
            ``bg_samples`` per step (never fewer than given) and logs it. None: the counts as
            given (a ``fg_samples=`` or ``bg_samples=`` override sets this, unless
            ``reference_image_steps`` is given too).
        seed_dilation: each sampled pixel is dilated by a square of this side, 3 (reference).
        erosion_size: side of the square that erodes the Otsu regions: ``"auto"`` (ours, both
            presets): the source's stride in image pixels (image side / source map side on the
            first batch), rounded to an odd number, since the spec sets the erosion to about one
            source stride; or an odd int (the reference's 11 at 224 pixels).
        erosion_iterations: 1 (reference); an erosion that would empty a region is skipped.

    Images:
        pixel_mean, pixel_std: the normalisation of the images the loader yields, on the 0-255
            scale: ``rgb = image * std + mean`` gives the colours of the CRF kernel. Default
            ImageNet (ours: what the hosts use); use ``(0, 0, 0)`` / ``(1, 1, 1)`` for raw
            0-255 images, ``(0, 0, 0)`` / ``(255, 255, 255)`` for images in [0, 1].
        seed: seed of the decoder's initialisation and of the seed sampling.
    """

    METHOD: ClassVar[str] = "F-CAM"
    BUDGETS: ClassVar[Mapping[str, Tuple[str, ...]]] = {"reference_image_steps": ("fg_samples", "bg_samples")}

    @classmethod
    def presets(cls) -> Mapping[str, "FCAMConfig"]:
        return PRESETS

    decoder_channels: Tuple[int, ...] = (256, 128, 64, 32, 16)
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 10
    seg_weight: float = 1.0
    crf_weight: float = 5.0
    size_weight: float = 0.1
    crf_sigma_rgb: float = 15.0
    crf_sigma_xy: Union[float, str] = AUTO
    crf_scale: float = 0.5
    crf_radius: int = 5
    crf_kernel: str = "dense"
    crf_dense_pixels: int = 1024
    elb_t0: float = 1.0
    elb_t_growth: float = 1.01
    elb_t_max: float = 10.0
    bg_fraction: Union[float, str] = AUTO
    fg_samples: Optional[int] = 1
    bg_samples: Optional[int] = 1
    reference_image_steps: Optional[int] = VOC_REFERENCE_IMAGE_STEPS
    seed_dilation: int = 3
    erosion_size: Union[int, str] = AUTO
    erosion_iterations: int = 1
    pixel_mean: Tuple[float, float, float] = IMAGENET_MEAN_255
    pixel_std: Tuple[float, float, float] = IMAGENET_STD_255
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("decoder_channels", "pixel_mean", "pixel_std"):  # lists (from_dict), arrays, tensors
            value = getattr(self, name)
            if isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "tolist"):
                values = value.tolist() if hasattr(value, "tolist") else value
                object.__setattr__(self, name, tuple(v.item() if hasattr(v, "item") else v for v in values))
        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if not (isinstance(value, tuple) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                     and math.isfinite(v) for v in value)):
                raise ValueError(f"{name} must be 3 numbers (RGB, on the 0-255 scale), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        checks = [
            (len(self.decoder_channels) >= 1 and all(is_int(c) and c >= 1 for c in self.decoder_channels),
             f"decoder_channels must be a non-empty tuple of ints >= 1, got {self.decoder_channels!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (is_int(self.epochs) and self.epochs >= 1, f"epochs must be an int >= 1, got {self.epochs!r}"),
            (self.seg_weight >= 0, f"seg_weight must be >= 0, got {self.seg_weight}"),
            (self.crf_weight >= 0, f"crf_weight must be >= 0, got {self.crf_weight}"),
            (self.size_weight >= 0, f"size_weight must be >= 0, got {self.size_weight}"),
            (self.crf_sigma_rgb > 0, f"crf_sigma_rgb must be > 0, got {self.crf_sigma_rgb}"),
            (self.crf_sigma_xy == AUTO or (isinstance(self.crf_sigma_xy, numbers.Real) and self.crf_sigma_xy > 0),
             f"crf_sigma_xy must be > 0 or {AUTO!r}, got {self.crf_sigma_xy!r}"),
            (0 < self.crf_scale <= 1, f"crf_scale must be in (0, 1], got {self.crf_scale}"),
            (is_int(self.crf_radius) and self.crf_radius >= 1,
             f"crf_radius must be an int >= 1, got {self.crf_radius!r}"),
            (self.crf_kernel in CRF_KERNELS, f"crf_kernel must be one of {CRF_KERNELS}, got {self.crf_kernel!r}"),
            (is_int(self.crf_dense_pixels) and self.crf_dense_pixels >= 4,
             f"crf_dense_pixels must be an int >= 4, got {self.crf_dense_pixels!r}"),
            (self.elb_t0 > 0, f"elb_t0 must be > 0, got {self.elb_t0}"),
            (self.elb_t_growth >= 1, f"elb_t_growth must be >= 1, got {self.elb_t_growth}"),
            (self.elb_t_max >= self.elb_t0, f"elb_t_max must be >= elb_t0, got {self.elb_t_max}"),
            (self.bg_fraction == AUTO or (isinstance(self.bg_fraction, numbers.Real) and 0 < self.bg_fraction < 1),
             f"bg_fraction must be in (0, 1) or {AUTO!r}, got {self.bg_fraction!r}"),
            (self.fg_samples is None or (is_int(self.fg_samples) and self.fg_samples >= 1),
             f"fg_samples must be an int >= 1 or None (every candidate), got {self.fg_samples!r}"),
            (self.bg_samples is None or (is_int(self.bg_samples) and self.bg_samples >= 1),
             f"bg_samples must be an int >= 1 or None (every candidate), got {self.bg_samples!r}"),
            (self.reference_image_steps is None
             or (is_int(self.reference_image_steps) and self.reference_image_steps >= 1),
             f"reference_image_steps must be None or an int >= 1, got {self.reference_image_steps!r}"),
            (is_int(self.seed_dilation) and self.seed_dilation >= 1 and self.seed_dilation % 2 == 1,
             f"seed_dilation must be an odd int >= 1, got {self.seed_dilation!r}"),
            (self.erosion_size == AUTO
             or (is_int(self.erosion_size) and self.erosion_size >= 1 and self.erosion_size % 2 == 1),
             f"erosion_size must be an odd int >= 1 or {AUTO!r}, got {self.erosion_size!r}"),
            (is_int(self.erosion_iterations) and self.erosion_iterations >= 0,
             f"erosion_iterations must be an int >= 0, got {self.erosion_iterations!r}"),
            (len(self.pixel_mean) == 3, f"pixel_mean must hold 3 values (RGB), got {self.pixel_mean!r}"),
            (len(self.pixel_std) == 3 and all(s > 0 for s in self.pixel_std),
             f"pixel_std must hold 3 positive values (RGB), got {self.pixel_std!r}"),
            (is_int(self.seed), f"seed must be an int, got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def sample_factor(self, image_steps: int) -> int:
        """How many times ``fg_samples`` / ``bg_samples`` a run of ``image_steps`` (epochs x images)
        samples per step to see the preset's seed budget: ``round(reference_image_steps /
        image_steps)``, at least 1; 1 without ``reference_image_steps``."""
        if self.reference_image_steps is None:
            return 1
        return max(1, round(self.reference_image_steps / max(image_steps, 1)))

    def sigma_xy(self, image_side: int) -> float:
        """The CRF's spatial width in pixels of images of ``image_side``: the configured number, or
        for ``"auto"`` the paper's ``100 * image_side / 224``."""
        if self.crf_sigma_xy == AUTO:
            return PAPER_SIGMA_XY * image_side / PAPER_IMAGE_SIDE
        return float(self.crf_sigma_xy)


PRESETS: Dict[str, FCAMConfig] = {
    "voc": FCAMConfig(),
    "coco": FCAMConfig(epochs=3, reference_image_steps=COCO_REFERENCE_IMAGE_STEPS),
}


def odd_stride(image_side: int, source_side: int) -> int:
    """The source's stride in image pixels, ``image_side / source_side``, rounded to the nearest odd
    int >= 1 (halves round up): the erosion of ``erosion_size="auto"``."""
    stride = image_side / max(source_side, 1)
    return max(1, 2 * math.floor((stride - 1) / 2 + 0.5) + 1)
