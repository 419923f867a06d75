"""Pretraining the benchmark's backbones on a classification corpus of shared parts, as the hosts'
backbones are pretrained on ImageNet before VOC; the shipped backbones and how they are checked.

- :class:`CorpusConfig` / :func:`generate_corpus`: 64 classes (:func:`~lpcam_plugin.benchmark.parts.
  pretraining_triples`) x 150 images of one object at 96 px, backgrounds drawn uniformly; image
  ``i`` is of class ``i % 64``; every 10th image of a class is held out.
- :class:`PretrainConfig` / :func:`pretrain`: single-label softmax cross-entropy, SGD with momentum,
  cosine learning rate, flips.
- :func:`save_backbone` / :func:`load_backbone`: the weights as float16 in a pickle-free ``.npz``
  with their metadata (corpus seed, command, held-out accuracy); the pretraining head is kept in the
  file so that its accuracy can be checked (:func:`pretraining_network`) and never loaded into a
  benchmark network. :data:`MANIFEST` records each shipped file's sha256, checked on every load
  (:func:`shipped_backbone`).

Design and reasons: docs/design/pretrained-regime.md. The command that writes the shipped files:
``lpcam pretrain --out lpcam_plugin/benchmark/weights``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lpcam_plugin.benchmark.parts import (
    CORPUS_SEED,
    draw_object,
    object_box,
    part_library,
    place,
    pretraining_triples,
    render,
    to_image,
)
from lpcam_plugin.benchmark.synthetic import images_to_tensor
from lpcam_plugin.benchmark.toynet import ToyClassifier, build_network
from lpcam_plugin.core.io import atomic_write
from lpcam_plugin.core.progress import progress_bar

logger = logging.getLogger(__name__)

#: Where the shipped backbones and their manifest live.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped files' manifest: ``{network kind: {"file", "sha256", ...metadata}}``.
MANIFEST = WEIGHTS_DIR / "manifest.json"
#: ``format`` of the backbone files.
BACKBONE_FORMAT = "lpcam_plugin.backbone/1"
#: Held-out images per class in the fixed sample of :func:`sample_indices`.
SAMPLE_PER_CLASS = 3
#: The command that writes the shipped backbones.
PRETRAIN_COMMAND = "lpcam pretrain --out lpcam_plugin/benchmark/weights"


@dataclass(frozen=True)
class CorpusConfig:
    """The pretraining corpus: ``images_per_class`` images of each of the 64 classes, one object of
    ``object_scale`` x the side, >= ``min_inside`` of its box inside the image; every
    ``held_out_every``-th image of a class is held out."""

    images_per_class: int = 150
    image_size: int = 96
    object_scale: Tuple[float, float] = (0.4, 0.7)
    min_inside: float = 0.8
    noise_std: float = 0.04
    held_out_every: int = 10
    seed: int = CORPUS_SEED

    @property
    def num_classes(self) -> int:
        """The number of pretraining classes (64)."""
        return len(pretraining_triples(self.seed))

    @property
    def num_images(self) -> int:
        """Images in the corpus."""
        return self.num_classes * self.images_per_class

    def held_out(self) -> np.ndarray:
        """Indices of the held-out images (every ``held_out_every``-th image of each class)."""
        index = np.arange(self.num_images)
        return index[(index // self.num_classes) % self.held_out_every == 0]

    def training(self) -> np.ndarray:
        """Indices of the training images."""
        return np.setdiff1d(np.arange(self.num_images), self.held_out())


def generate_corpus(config: CorpusConfig = CorpusConfig(), indices: Optional[Sequence[int]] = None, *,
                    progress: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(n, S, S, 3)`` uint8 and class labels ``(n,)`` int64 of the corpus images ``indices``
    (all by default). Image ``i`` depends only on ``(config, i)``: a sample is the same pixels as in the full corpus."""
    library, triples = part_library(config.seed), pretraining_triples(config.seed)
    chosen = np.arange(config.num_images) if indices is None else np.asarray(indices, dtype=np.int64)
    size = config.image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.zeros((len(chosen), size, size, 3), dtype=np.uint8)
    labels = (chosen % len(triples)).astype(np.int64)
    for k, index in enumerate(progress_bar(chosen, progress=progress, desc="pretraining corpus", total=len(chosen))):
        rng = np.random.default_rng([config.seed, 0xC0, int(index)])
        head, body, legs = triples[labels[k]]
        canvas = render(library.backgrounds[int(rng.integers(0, len(library.backgrounds)))], yy, xx, rng)
        scale = rng.uniform(*config.object_scale) * size
        facing = 1 if rng.random() < 0.5 else -1
        cx, cy = place(lambda x, y, s=scale, f=facing: object_box(x, y, s, f), size, config.min_inside, rng)
        textures = {"head": library.heads[head], "body": library.bodies[body], "legs": library.legs[legs]}
        draw_object(canvas, textures, cx, cy, scale, facing, yy, xx, rng)
        images[k] = to_image(canvas, config.noise_std, rng)
    return images, labels


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining schedule: SGD (momentum, weight decay), cosine learning rate per step, flips."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0


def batch_plan(num_images: int, config: PretrainConfig = PretrainConfig()
               ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Per optimiser step of the schedule, ``(indices (B,), flips (B,) bool)`` into ``num_images`` training
    images: a fresh permutation per epoch, a coin per image, all from one generator seeded with ``config.seed``."""
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(num_images, generator=generator)
        for start in range(0, num_images, config.batch_size):
            batch = order[start:start + config.batch_size]
            yield batch, torch.rand(batch.numel(), generator=generator) < 0.5


def pretrain(model: ToyClassifier, images: torch.Tensor, labels: torch.Tensor,
             config: PretrainConfig = PretrainConfig(), *, max_steps: Optional[int] = None,
             num_images: Optional[int] = None, progress: Optional[bool] = None) -> List[float]:
    """Train ``model`` (its head sized to the corpus's classes) in place with softmax cross-entropy.

    Args:
        images: ``(N, 3, S, S)`` standardised inputs; labels: ``(N,)`` class indices.
        max_steps: stop after this many optimiser steps (the schedule is still the full one's).
        num_images: the size of the training set the schedule is planned for, when ``images`` holds only
            the images the first ``max_steps`` steps draw, in the order they draw them (:func:`first_steps`).

    Returns:
        The loss of every step. The model is left in eval mode.
    """
    if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images (N, 3, S, S) and labels (N,) disagree: {tuple(images.shape)} vs "
                         f"{tuple(labels.shape)}")
    planned = images.shape[0] if num_images is None else num_images
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    total = config.epochs * math.ceil(planned / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    loss_fn = nn.CrossEntropyLoss()
    losses: List[float] = []
    model.train()
    drawn = 0
    steps = progress_bar(batch_plan(planned, config), progress=progress, desc="pretrain",
                         total=total if max_steps is None else min(total, max_steps))
    for batch, flip in steps:
        if num_images is not None:  # the images come in the order the plan draws them
            batch = torch.arange(drawn, drawn + batch.numel())
            drawn += batch.numel()
        x = images[batch]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = loss_fn(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if max_steps is not None and len(losses) >= max_steps:
            break
    model.eval()
    return losses


def first_steps(kind: str, options: Dict[str, Any], steps: int = 3, corpus: CorpusConfig = CorpusConfig(),
                schedule: PretrainConfig = PretrainConfig()) -> List[float]:
    """The losses of the first ``steps`` steps of :func:`run_pretraining` for one network, generating
    only the corpus images those steps draw: the manifest's ``first_losses`` are what these must equal."""
    training = corpus.training()
    plan = batch_plan(len(training), schedule)
    drawn = torch.cat([next(plan)[0] for _ in range(steps)])
    images, labels = generate_corpus(corpus, training[drawn.numpy()], progress=False)
    torch.manual_seed(schedule.seed)
    model = build_network(kind, corpus.num_classes, **options)
    return pretrain(model, images_to_tensor(images), torch.from_numpy(labels), schedule, max_steps=steps,
                    num_images=len(training), progress=False)


@torch.inference_mode()
def accuracy(model: ToyClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(N, 3, S, S)`` images with ``(N,)`` labels."""
    model.eval()
    predictions = torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, images.shape[0], batch_size)])
    return float((predictions == labels).float().mean())


def save_backbone(path: Path, model: ToyClassifier, metadata: Dict[str, Any]) -> str:
    """Write ``model``'s weights (float16; integer buffers as int64; the pretraining head included) and
    JSON ``metadata`` to ``path`` atomically, pickle-free; returns the file's sha256."""
    arrays = {f"w/{name}": (value.float().numpy().astype(np.float16) if value.is_floating_point()
                            else value.numpy().astype(np.int64))
              for name, value in model.state_dict().items()}
    meta = {"format": BACKBONE_FORMAT, "network": type(model).__name__,
            "architecture": {k: v for k, v in model.architecture().items() if k != "num_classes"}, **metadata}
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, metadata=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_backbone(path: Path, sha256: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state dict, metadata)`` of a file :func:`save_backbone` wrote (never unpickled);
    with ``sha256``, a file whose digest differs is refused."""
    digest = None if sha256 is None else file_sha256(path)
    if digest != sha256:
        raise ValueError(f"{path}: sha256 {digest} differs from the recorded {sha256}")
    with np.load(path, allow_pickle=False) as payload:
        if "metadata" not in payload.files:
            raise ValueError(f"{path}: not a {BACKBONE_FORMAT} file (no metadata)")
        meta = json.loads(str(payload["metadata"]))
        if meta.get("format") != BACKBONE_FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {BACKBONE_FORMAT}")
        state = {name[2:]: torch.from_numpy(payload[name].astype(np.float32 if payload[name].dtype.kind == "f"
                                                                   else np.int64))
                 for name in payload.files if name.startswith("w/")}
    return state, meta


def load_backbone(model: ToyClassifier, path: Path, sha256: Optional[str] = None) -> Dict[str, Any]:
    """Copy the backbone at ``path`` into ``model`` (its head untouched); returns the file's metadata.

    Raises ``ValueError`` when the file was written for another network or architecture, or when an
    entry is missing or extra."""
    state, meta = read_backbone(path, sha256)
    arch = {k: v for k, v in model.architecture().items() if k != "num_classes"}
    if meta.get("network") != type(model).__name__ or json.loads(json.dumps(arch)) != meta.get("architecture"):
        raise ValueError(f"{path}: a backbone of {meta.get('network')} {meta.get('architecture')}, "
                         f"not of this {type(model).__name__} {arch}")
    head = model.HEAD + "."
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)},
                                                strict=False)
    missing = [name for name in missing if not name.startswith(head)]
    if missing or unexpected:
        raise ValueError(f"{path}: backbone entries missing {missing[:3]} or unexpected {list(unexpected)[:3]}")
    return meta


def manifest(folder: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """The backbones' manifest in ``folder`` (default: the shipped one); ``{}`` when there is none."""
    path = MANIFEST if folder is None else Path(folder) / MANIFEST.name
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_backbone(kind: str, folder: Optional[Path] = None) -> Tuple[Path, str]:
    """``(file, sha256)`` of the backbone for network ``kind`` in ``folder``'s manifest (default: the
    shipped one); ``LookupError`` naming the pretraining command when there is none."""
    entries = manifest(folder)
    folder = WEIGHTS_DIR if folder is None else Path(folder)
    if kind not in entries:
        raise LookupError(f"no pretrained {kind} backbone in {folder}; write one with `{PRETRAIN_COMMAND}`")
    return folder / entries[kind]["file"], entries[kind]["sha256"]


def pretrained_network(kind: str, num_classes: int, options: Dict[str, Any], folder: Optional[Path] = None
                       ) -> Tuple[ToyClassifier, str]:
    """A ``kind`` network with a fresh ``num_classes`` head on the pretrained backbone (checksum checked);
    returns it and the backbone's sha256."""
    path, sha256 = shipped_backbone(kind, folder)
    model = build_network(kind, num_classes, **options)
    load_backbone(model, path, sha256)
    return model, sha256


def pretraining_network(kind: str, folder: Optional[Path] = None) -> Tuple[ToyClassifier, Dict[str, Any]]:
    """The pretrained ``kind`` network with its pretraining head (eval mode) and its manifest entry:
    what :func:`accuracy` on the corpus checks."""
    return _with_pretraining_head(*shipped_backbone(kind, folder)), manifest(folder)[kind]


def _with_pretraining_head(path: Path, sha256: str) -> ToyClassifier:
    """The network stored at ``path`` (checksum checked) with its pretraining head, eval mode."""
    state, meta = read_backbone(path, sha256)
    model = build_network(meta["network"], meta["corpus_classes"], **meta["architecture"])
    model.load_state_dict(state)
    return model.eval()


def sample_indices(corpus: CorpusConfig = CorpusConfig(), per_class: int = SAMPLE_PER_CLASS) -> np.ndarray:
    """The fixed corpus sample whose accuracy the manifest records: the first ``per_class`` held-out
    images of every class."""
    return corpus.held_out()[: per_class * corpus.num_classes]


def run_pretraining(networks: Sequence[Tuple[str, Dict[str, Any]]], out: Path, *,
                    corpus: CorpusConfig = CorpusConfig(), schedule: PretrainConfig = PretrainConfig(),
                    progress: Optional[bool] = None, command: str = PRETRAIN_COMMAND) -> Dict[str, Dict[str, Any]]:
    """Generate the corpus, pretrain each ``(kind, options)`` network on its training images, and write
    ``<kind>.npz`` and ``manifest.json`` (file, sha256, held-out accuracy, corpus and schedule) to ``out``."""
    images, labels = generate_corpus(corpus, progress=progress)
    x, y = images_to_tensor(images), torch.from_numpy(labels)
    train, held = torch.from_numpy(corpus.training()), torch.from_numpy(corpus.held_out())
    out.mkdir(parents=True, exist_ok=True)
    entries = manifest(out)
    for kind, options in networks:
        torch.manual_seed(schedule.seed)
        model = build_network(kind, corpus.num_classes, **options)
        losses = pretrain(model, x[train], y[train], schedule, progress=progress)
        held_out = accuracy(model, x[held], y[held])
        logger.info("pretrained %s: final loss %.3f, held-out accuracy %.3f", kind, losses[-1], held_out)
        metadata = {"corpus": asdict(corpus), "corpus_classes": corpus.num_classes, "schedule": asdict(schedule),
                    "command": command, "held_out_accuracy": held_out, "final_loss": losses[-1],
                    "first_losses": losses[:3], "steps": len(losses)}
        name = f"{kind}.npz"
        sha256 = save_backbone(out / name, model, metadata)
        written = _with_pretraining_head(out / name, sha256)  # the float16 weights as they are read back
        sample = torch.from_numpy(sample_indices(corpus))
        entries[kind] = {"file": name, "sha256": sha256, **metadata, "sample_per_class": SAMPLE_PER_CLASS,
                         "sample_accuracy": accuracy(written, x[sample], y[sample])}
        with atomic_write(out / MANIFEST.name) as tmp:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return entries
