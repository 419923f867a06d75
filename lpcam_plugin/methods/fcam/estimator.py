"""The F-CAM estimator: train a full-resolution decoder on a frozen classifier, from any source CAM.

Example::

    fcam = FCAM(num_classes=20, preset="voc")
    fcam.fit(model, loader, feature_layer="stage4", skip_layers=["conv1", "stage1", "stage2", "stage3"],
             source=lambda f, y: cam_map(f, W) * (y > 0)[:, :, None, None])   # or a fitted LPCAM / ReCAM
    maps = fcam.predict(model, images, labels)     # (B, C, H, W) in [0, 1], 0 for absent classes
    fcam.save("fcam.npz"); fcam = FCAM.load("fcam.npz")

The frozen encoder and the decoder's trainer (optimiser, DDP, one step, resumable state) live in
:mod:`lpcam_plugin.methods.fcam.training`; the method is specified in ``docs/design/fcam-spec.md``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lpcam_plugin.core.archive import read_archive, write_archive
from lpcam_plugin.core.checkpoints import RESTART_HINT, resume_state
from lpcam_plugin.core.checks import (
    check_finite,
    check_images,
    check_multi_hot,
    check_num_classes,
    check_training_batch,
)
from lpcam_plugin.core.divergence import diverged, non_finite_losses, non_finite_parameters
from lpcam_plugin.core.identity import data_identity, module_digest, value_digest
from lpcam_plugin.core.io import PathLike
from lpcam_plugin.core.progress import progress_bar
from lpcam_plugin.core.version import __version__
from lpcam_plugin.methods.fcam.config import FCAMConfig
from lpcam_plugin.methods.fcam.decoder import FCAMDecoder, mask_absent, present_channels
from lpcam_plugin.methods.fcam.rules import data_settings, epoch_images
from lpcam_plugin.methods.fcam.seeds import make_seeds
from lpcam_plugin.methods.fcam.selection import (
    DEFAULT_CANDIDATES,
    Validation,
    candidate_checkpoint,
    check_candidates,
    check_validation,
    validation_score,
)
from lpcam_plugin.methods.fcam.training import (
    CHECKPOINT_FORMAT,
    TIE_STREAM,
    DecoderTrainer,
    FrozenEncoder,
    epoch_seed,
    freeze,
    model_device,
    restore,
    set_epoch,
)
from lpcam_plugin.methods.readouts import BatchMaps

logger = logging.getLogger(__name__)

FORMAT_NAME = "lpcam_plugin.FCAM"
FORMAT_VERSION = 1
#: IRN / AMN's ResNet-50 levels below ``stage4``.
DEFAULT_SKIP_LAYERS = ("conv1", "stage1", "stage2", "stage3")
#: Tolerance on the source maps' range [0, 1].
_RANGE_TOLERANCE = 1e-4
#: What a diverged F-CAM fit leaves: the classifier is never trained, the decoder is dropped.
_KEPT = "The classifier is unchanged and no decoder or checkpoint of this fit was kept."
#: De-normalised colours of a batch must span at least this much of the 0-255 scale (constants on the
#: 0-1 scale give a span of about 2) and stay within this far outside it (un-normalised images).
_MIN_COLOUR_SPAN, _COLOUR_MARGIN = 8.0, 300.0


def check_colours(images: torch.Tensor, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
    """Refuse ``pixel_mean`` / ``pixel_std`` that cannot turn ``images`` ``(B, 3, H, W)`` back into 0-255
    colours (what the CRF's colour kernel compares), naming the likely mistake."""
    mean = torch.tensor(pixel_mean, dtype=torch.float32, device=images.device)[None, :, None, None]
    std = torch.tensor(pixel_std, dtype=torch.float32, device=images.device)[None, :, None, None]
    colours = images.float() * std + mean
    low, high = float(colours.min()), float(colours.max())
    if high - low < _MIN_COLOUR_SPAN:
        raise ValueError(f"pixel_mean={tuple(pixel_mean)} and pixel_std={tuple(pixel_std)} turn the first batch into "
                         f"colours in [{low:.3g}, {high:.3g}], not 0-255 colours: they look like 0-1 scale constants; "
                         "give them on the 0-255 scale (ImageNet: (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))")
    if low < -_COLOUR_MARGIN or high > 255 + _COLOUR_MARGIN:
        raise ValueError(f"pixel_mean={tuple(pixel_mean)} and pixel_std={tuple(pixel_std)} turn the first batch into "
                         f"colours in [{low:.4g}, {high:.4g}], far outside 0-255: are the images normalised the "
                         "way pixel_mean and pixel_std say?")

#: What F-CAM decodes: ``source(features (B, D, h, w), labels (B, C)) -> (B, C, h', w')`` maps in [0, 1]
#: (the read-out registry's :data:`~lpcam_plugin.methods.readouts.BatchMaps`).
Source = BatchMaps

class FCAM:
    """Full-resolution CAMs (Belharbi et al., WACV 2022), multi-label, over any source CAM.

    A decoder (:class:`~lpcam_plugin.methods.fcam.decoder.FCAMDecoder`) reads the frozen
    classifier's features, skip features and the image, and outputs a softmax over the
    background and the image's present classes at full resolution. It is trained from seeds
    drawn from the ``source`` maps (:mod:`~lpcam_plugin.methods.fcam.seeds`) with a partial
    cross-entropy, a CRF loss and a size term (:mod:`~lpcam_plugin.methods.fcam.losses`).

    Args:
        num_classes: C (no background).
        preset: ``"voc"`` or ``"coco"`` defaults (:class:`FCAMConfig`).
        config: a full :class:`FCAMConfig` instead of a preset.
        progress: progress bars: None (auto, hidden off a TTY), True or False.
        **overrides: any :class:`FCAMConfig` field, e.g. ``epochs=2``.

    Fitted attributes:
        decoder_: the trained :class:`FCAMDecoder` (eval mode).
        feature_layer_: the deepest layer's dotted name.
        skip_layers_: the skip layers' names, coarse to fine (the decoder's order).
        skip_channels_: their channel counts; feature_dim_: D.
        n_steps_: optimisation steps run (this process, all epochs, resumed ones included).
        loss_history_: per epoch ``{"epoch", "seg", "crf", "size", "total", "elb_t"}`` means.
        seed_settings_: the seed and CRF settings the fit used, ``"auto"`` ones and the seed
            budget derived from the data: ``{"erosion_size": int, "bg_fraction": float or None
            (Otsu), "source_stride": float, "crf_sigma_xy": float, "images_per_epoch": int or None,
            "sample_factor": int, "fg_samples", "bg_samples": int or None}`` (the counts sampled
            per step).
        selection_: with ``fit(..., validation=...)``, per candidate ``{"settings", "miou",
            "threshold", "seed_settings"}`` (saved with the decoder); else empty.

    Attributes:
        metadata: JSON-able facts saved with the decoder by :meth:`save` (set by the caller,
            e.g. what it was trained from, to decide whether a saved decoder can be reused).
    """

    def __init__(self, num_classes: int, preset: str = "voc", *, config: Optional[FCAMConfig] = None,
                 progress: Optional[bool] = None, **overrides: Any) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.config = FCAMConfig.resolve(preset, config, **overrides)
        self.progress = progress
        self.decoder_: Optional[FCAMDecoder] = None
        self.feature_layer_: Optional[str] = None
        self.skip_layers_: List[str] = []
        self.skip_channels_: List[int] = []
        self.feature_dim_: Optional[int] = None
        self.n_steps_ = 0
        self.loss_history_: List[Dict[str, float]] = []
        self.seed_settings_: Dict[str, Any] = {}
        self.selection_: List[Dict[str, Any]] = []
        #: JSON-able facts saved with the decoder (what it was trained from, set by the caller).
        self.metadata: Dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, model: nn.Module, loader: Iterable[Sequence[Any]], *, source: Source, feature_layer: str = "stage4",
            skip_layers: Sequence[str] = DEFAULT_SKIP_LAYERS, checkpoint: Optional[PathLike] = None,
            restart: bool = False, validation: Optional[Sequence[torch.Tensor]] = None,
            candidates: Sequence[Mapping[str, Any]] = DEFAULT_CANDIDATES) -> "FCAM":
        """Train the decoder on ``model``'s frozen features; set the fitted attributes.

        The model is never changed: it runs without gradient with every module in eval mode
        (BatchNorm statistics untouched) and gets its train/eval flags back afterwards. The
        decoder trains on the model's device. Under ``torch.distributed`` (an initialised
        process group) the decoder runs in DistributedDataParallel: give each rank its share of
        every batch (e.g. a ``DistributedSampler``); with equal shards and deterministic seeds
        (``fg_samples=None, bg_samples=None``) the result equals one process on whole batches.

        Args:
            model: the trained classifier; ``model(images)`` must call ``feature_layer`` and
                every skip layer.
            loader: yields ``(images (B, 3, H, W), labels (B, C))`` (further items are
                ignored), images normalised as ``config.pixel_mean``/``pixel_std`` say. When
                it or its ``sampler`` has ``set_epoch``, that is called before each epoch.
            source: ``source(features (B, D, h, w), labels (B, C)) -> (B, C, h', w')`` maps in
                [0, 1] (any ``h', w'``; resized to the image): ``lambda f, y: cam_map(f, W)``, a
                fitted ``LPCAM`` or ``ReCAM``, or any function. Called without gradient.
            feature_layer: dotted name of the deepest features.
            skip_layers: dotted names of the skip features (any strides; the image is always
                the last, full-resolution skip). Ordered coarse to fine from the first batch.
            checkpoint: a file to save the training state to after every epoch, and to resume
                from when it exists (``torch.load(weights_only=True)``). It records the config,
                classes, layers and loader length, and the digests (:mod:`lpcam_plugin.core.identity`)
                of the model's weights, of the data and of the source (its module state, fitted
                attributes, or code and what it closes over); a checkpoint that differs in any of
                them is refused with a one-line ``ValueError`` naming what differs.
            restart: start over even when ``checkpoint`` exists (it is overwritten after the first epoch).
            validation: a held-out split with masks, ``(images (V, 3, H, W), labels (V, C),
                masks (V, H, W))`` (0 background, ``c + 1`` class c, 255 ignored), the paper's way
                to choose the seed settings: one decoder is trained per entry of ``candidates``
                (each a dict of :class:`FCAMConfig` fields over this config; with a ``checkpoint``,
                each candidate resumes from its own file,
                :func:`~lpcam_plugin.methods.fcam.selection.candidate_checkpoint`),
                scored by seed-mask mIoU on the split at its best background threshold, and the
                best is kept (the first on ties): ``config`` becomes its settings and
                ``selection_`` lists every candidate's score. Training costs one fit per candidate.
            candidates: the settings tried with ``validation`` (default: ``bg_fraction`` ``"auto"``,
                0.1, 0.3, 0.5, 0.7, the paper's range).
        """
        if not callable(source):
            raise TypeError(f"source must be a callable source(features, labels) -> maps, got {type(source).__name__}")
        if validation is not None:
            return self._select(model, loader, source, check_validation(validation, self.num_classes),
                                check_candidates(candidates), feature_layer=feature_layer, skip_layers=skip_layers,
                                checkpoint=checkpoint, restart=restart)
        skip_layers = self._check_layers(feature_layer, skip_layers)
        encoder = FrozenEncoder(model, feature_layer, skip_layers)
        device = model_device(model)
        steps_per_epoch = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        if steps_per_epoch == 0:
            raise ValueError("the loader is empty")
        fingerprint = {}  # the digests read every weight and the source's arrays: only a checkpoint needs them
        if checkpoint is not None:
            fingerprint = {"config": self.config.to_dict(), "num_classes": self.num_classes,
                           "feature_layer": feature_layer, "skip_layers": list(skip_layers),
                           "steps_per_epoch": steps_per_epoch, "model_weights": module_digest(model),
                           "data": data_identity(loader), "source": value_digest(source)}
        distributed = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if distributed else 0
        trainer = DecoderTrainer(self.config, self._new_decoder, device, distributed)
        start_epoch, history, n_steps = 0, [], 0
        state = resume_state(checkpoint, CHECKPOINT_FORMAT, "F-CAM", fingerprint, restart=restart, hint=RESTART_HINT)
        if state is not None:
            start_epoch, history, n_steps = trainer.resume(state)
            logger.info("F-CAM: resuming from %s after epoch %d of %d", checkpoint, start_epoch, self.config.epochs)
        generator = torch.Generator(device=device)
        self.seed_settings_, self.selection_ = {}, []
        modes = freeze(model)
        try:
            for epoch in range(start_epoch, self.config.epochs):
                set_epoch(loader, epoch)
                generator.manual_seed(epoch_seed(self.config.seed, epoch, rank))
                elb_t = min(self.config.elb_t0 * self.config.elb_t_growth ** epoch, self.config.elb_t_max)
                sums = {"seg": 0.0, "crf": 0.0, "size": 0.0, "total": 0.0}
                steps = 0
                batches = progress_bar(loader, progress=self.progress, total=steps_per_epoch,
                                       desc=f"F-CAM epoch {epoch + 1}/{self.config.epochs}")
                for batch in batches:
                    images, labels = self._batch(batch, device, f"batch {steps} of epoch {epoch + 1}")
                    if steps == 0 and epoch == start_epoch:
                        check_colours(images, self.config.pixel_mean, self.config.pixel_std)
                    features, skips = encoder(images)
                    maps, source_side = self._source_maps(source, features, labels, images.shape[-2:])
                    if not self.seed_settings_:
                        self.seed_settings_ = data_settings(
                            self.config, tuple(images.shape[-2:]), source_side,
                            epoch_images(loader, steps_per_epoch, images.shape[0], distributed))
                    settings = self.seed_settings_
                    seeds = make_seeds(maps, labels, bg_fraction=settings["bg_fraction"],
                                       erosion_size=settings["erosion_size"],
                                       erosion_iterations=self.config.erosion_iterations,
                                       fg_samples=settings["fg_samples"], bg_samples=settings["bg_samples"],
                                       dilation=self.config.seed_dilation, generator=generator,
                                       tie_seed=epoch_seed(self.config.seed, epoch, TIE_STREAM))
                    losses = trainer.step(features, skips, images, labels, seeds, elb_t,
                                          sigma_xy=settings["crf_sigma_xy"])
                    problem = non_finite_losses(losses)
                    if problem is not None:
                        raise diverged("F-CAM", f"epoch {epoch + 1}, batch {steps}", problem, _KEPT)
                    for key in sums:
                        sums[key] += losses[key]
                    steps += 1
                if steps == 0:
                    raise ValueError("the loader is empty")
                n_steps += steps
                history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "elb_t": elb_t})
                logger.info("F-CAM epoch %d: seg %.4f crf %.4f size %.4f total %.4f", epoch + 1, history[-1]["seg"],
                            history[-1]["crf"], history[-1]["size"], history[-1]["total"])
                problem = non_finite_parameters(trainer.decoder.named_parameters())
                if problem is not None:
                    raise diverged("F-CAM", f"the end of epoch {epoch + 1}", problem, _KEPT)
                if checkpoint is not None:
                    trainer.save(Path(checkpoint), fingerprint, epoch + 1, history, n_steps, write=rank == 0)
                    if distributed:
                        dist.barrier()
        finally:
            restore(modes)
        decoder = trainer.decoder
        assert decoder is not None  # built by the first step or by resume()
        self.decoder_ = decoder.eval()
        self.feature_layer_ = feature_layer
        self.skip_layers_, self.skip_channels_ = trainer.skip_layers, trainer.skip_channels
        self.feature_dim_ = trainer.feature_dim
        self.n_steps_ = n_steps
        self.loss_history_ = history
        return self

    def _select(self, model: nn.Module, loader: Iterable[Sequence[Any]], source: Source, validation: Validation,
                candidates: Sequence[Dict[str, Any]], *, checkpoint: Optional[PathLike], **fit_args: Any) -> "FCAM":
        """Fit one decoder per candidate, score each on ``validation``, keep the best (see :meth:`fit`)."""
        scored: List[Dict[str, Any]] = []
        best: Optional[FCAM] = None
        best_miou = -1.0
        for index, candidate in enumerate(candidates):
            trial = FCAM(self.num_classes, config=self.config.replace(**candidate), progress=self.progress)
            trial.fit(model, loader, source=source, checkpoint=candidate_checkpoint(checkpoint, index), **fit_args)
            miou, threshold = validation_score(trial, model, validation)
            scored.append({"settings": candidate, "miou": miou, "threshold": threshold,
                           "seed_settings": trial.seed_settings_})
            logger.info("F-CAM candidate %d/%d %s: validation mIoU %.4f at threshold %.2f", index + 1, len(candidates),
                        candidate, miou, threshold)
            if miou > best_miou:  # the first on ties
                best, best_miou = trial, miou
        assert best is not None  # check_candidates refuses an empty grid
        metadata = self.metadata
        self.__dict__.update({k: v for k, v in vars(best).items() if k != "progress"})
        self.metadata, self.selection_ = metadata, scored
        logger.info("F-CAM: kept bg_fraction %s (validation mIoU %.4f on %d images)", self.config.bg_fraction,
                    best_miou, validation[0].shape[0])
        return self

    def _check_layers(self, feature_layer: str, skip_layers: Sequence[str]) -> List[str]:
        if isinstance(skip_layers, str):
            raise TypeError(f"skip_layers must be a list of layer names, got the string {skip_layers!r}")
        names = list(skip_layers)
        if not all(isinstance(name, str) and name for name in [feature_layer, *names]):
            raise TypeError(f"feature_layer and skip_layers must be non-empty strings, "
                            f"got {feature_layer!r}, {names!r}")
        if feature_layer in names:
            raise ValueError(f"feature_layer {feature_layer!r} is also listed in skip_layers")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"skip_layers lists {repeated} more than once")
        return names

    def _batch(self, batch: Sequence[Any], device: torch.device, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, 3, H, W) float, labels (B, C) float)`` on ``device``, checked."""
        images, labels = check_training_batch(batch, self.num_classes, where)
        return images.to(device).float(), labels.to(device)

    def _source_maps(self, source: Source, features: torch.Tensor, labels: torch.Tensor,
                     size: Tuple[int, int]) -> Tuple[torch.Tensor, int]:
        """``source(features, labels)``, checked, resized to ``size`` (bilinear), absent classes zeroed,
        and the width of the source's own maps."""
        with torch.no_grad():
            maps = source(features, labels)
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or tuple(maps.shape[:2]) != tuple(labels.shape):
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise ValueError(f"source must return (B, C, h, w) = ({labels.shape[0]}, {self.num_classes}, h, w) maps, "
                             f"got {shape}")
        maps = maps.detach().float().to(labels.device)
        check_finite(maps, "the source maps")
        low, high = float(maps.min()), float(maps.max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"source maps must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
                             "normalise them (e.g. lpcam_plugin.max_normalize)")
        side = int(maps.shape[-1])
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)
        return maps * (labels > 0)[:, :, None, None], side

    # ------------------------------------------------------------------ maps
    def _check_fitted(self) -> FCAMDecoder:
        if self.decoder_ is None or self.feature_layer_ is None:
            raise RuntimeError("FCAM is not fitted: call fit() first or use FCAM.load()")
        return self.decoder_

    def predict(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Full-resolution maps: the decoder's softmax probability of each present class.

        Args:
            model: the classifier the decoder was trained on (left unchanged, as in :meth:`fit`).
            images: ``(B, 3, H, W)``, normalised as during training.
            labels: ``(B, C)`` multi-hot; absent classes are masked out of the softmax.

        Returns:
            ``(B, C, H, W)`` float32 in [0, 1] on the images' device, exactly 0 for absent
            classes (the background probability is ``1 - maps.sum(1)``).
        """
        decoder = self._check_fitted()
        encoder = FrozenEncoder(model, self.feature_layer_, self.skip_layers_)  # type: ignore[arg-type]
        device = model_device(model)
        out_device = images.device if isinstance(images, torch.Tensor) else device
        images = check_images(images)
        labels = check_multi_hot(labels, images.shape[0], self.num_classes).to(device)
        images = images.to(device).float()
        modes = freeze(model)
        try:
            features, skips = encoder(images)
        finally:
            restore(modes)
        self._check_shapes(features, skips)
        decoder.to(device).eval()
        with torch.no_grad():
            logits = decoder(features, [skips[name] for name in self.skip_layers_], images)
            probs = torch.softmax(mask_absent(logits.float(), present_channels(labels)), dim=1)
        return probs[:, 1:].to(out_device)

    def _check_shapes(self, features: torch.Tensor, skips: Mapping[str, torch.Tensor]) -> None:
        found = [int(features.shape[1])] + [int(skips[name].shape[1]) for name in self.skip_layers_]
        expected = [self.feature_dim_] + list(self.skip_channels_)
        if found != expected:
            names = [self.feature_layer_, *self.skip_layers_]
            raise ValueError(f"layers {names} have {found} channels but the decoder was built for {expected}")

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write the decoder and its settings to one pickle-free, checksummed file (atomically)."""
        decoder = self._check_fitted()
        arrays = {f"decoder.{name}": value.detach().cpu().numpy() for name, value in decoder.state_dict().items()}
        header = {"num_classes": self.num_classes, "config": self.config.to_dict(),
                  "feature_layer": self.feature_layer_, "skip_layers": self.skip_layers_,
                  "skip_channels": self.skip_channels_, "feature_dim": self.feature_dim_, "n_steps": self.n_steps_,
                  "seed_settings": self.seed_settings_, "selection": self.selection_,
                  "loss_history": self.loss_history_, "metadata": self.metadata,
                  "version": __version__}
        write_archive(path, FORMAT_NAME, FORMAT_VERSION, header, arrays)

    @classmethod
    def load(cls, path: PathLike, *, progress: Optional[bool] = None) -> "FCAM":
        """Read a file written by :meth:`save` (never unpickled; checksum and shapes verified); decoder on CPU."""
        header, arrays = read_archive(path, FORMAT_NAME, FORMAT_VERSION)
        model = cls(int(header["num_classes"]), config=FCAMConfig.from_dict(header["config"]), progress=progress)
        model.feature_layer_ = str(header["feature_layer"])
        model.skip_layers_ = [str(name) for name in header["skip_layers"]]
        model.skip_channels_ = [int(c) for c in header["skip_channels"]]
        model.feature_dim_ = int(header["feature_dim"])
        model.n_steps_ = int(header.get("n_steps", 0))
        model.seed_settings_ = dict(header.get("seed_settings", {}))
        model.loss_history_ = list(header.get("loss_history", []))
        model.metadata = dict(header.get("metadata", {}))
        model.selection_ = list(header.get("selection", []))
        decoder = model._new_decoder(model.feature_dim_, model.skip_channels_)
        state = {name[len("decoder."):]: torch.from_numpy(np.array(value)) for name, value in arrays.items()
                 if name.startswith("decoder.")}
        try:
            decoder.load_state_dict(state)
        except RuntimeError as error:
            last = str(error).strip().splitlines()[-1].strip()
            raise ValueError(f"{path}: the decoder weights do not fit the recorded layers ({last})") from None
        model.decoder_ = decoder.eval()
        return model

    def _new_decoder(self, feature_dim: int, skip_channels: Sequence[int]) -> FCAMDecoder:
        """A decoder initialised from ``config.seed`` (the global random state is left alone), on CPU."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return FCAMDecoder(feature_dim, skip_channels, self.num_classes, self.config.decoder_channels)

    def __repr__(self) -> str:
        if self.decoder_ is None:
            return f"FCAM(C={self.num_classes}, unfitted)"
        state = f"{self.feature_layer_} + {self.skip_layers_}, {self.n_steps_} steps"
        return f"FCAM(C={self.num_classes}, {state})"
