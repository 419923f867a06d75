"""What a ``lpcam demo`` run is: the networks, the seeds, the read-outs and every setting, and what
one (network, seed) of it yields.

:class:`DemoConfig` defines a run (recorded in ``results.json``); :class:`NetworkConfig` one
network of it (presets: :data:`NETWORK_PRESETS`); :func:`pixelsup_overrides` the RCM + MAM
settings of the ``+pss`` networks; :class:`SeedResult` the outcome of one (network, seed). The
read-outs' own settings (ReCAM, F-CAM) are beside their computation in
:mod:`lpcam_plugin.benchmark.readouts`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lpcam_plugin.benchmark.synthetic import SyntheticConfig
from lpcam_plugin.benchmark.toynet import ToyClassifier, build_network
from lpcam_plugin.benchmark.training import TrainConfig
from lpcam_plugin.core.evaluate import DEFAULT_THRESHOLDS, SweepResult
from lpcam_plugin.methods.pixelsup.config import PixelSupConfig, schedule_settings


@dataclass(frozen=True)
class NetworkConfig:
    """A benchmark network: ``name`` (table and folder name), ``kind`` (key of
    :data:`lpcam_plugin.benchmark.toynet.NETWORKS`), options.

    ``pixelsup``: train the classifier with RCM + MAM (:func:`pixelsup_overrides`) on the same schedule.
    """

    name: str
    kind: str
    options: Dict[str, Any] = field(default_factory=dict)
    pixelsup: bool = False

    def build(self, num_classes: int) -> ToyClassifier:
        """A fresh, untrained network for ``num_classes`` classes."""
        return build_network(self.kind, num_classes, **self.options)


#: IRN-like basic-block ResNet: output stride 8, D = 128.
TOYRESNET = NetworkConfig("toyresnet", "ToyResNet", {"widths": (32, 64, 128), "strides": (2, 2, 1)})
#: ResNet-50-stage-4-like: bottlenecks expanding to D = 1024 at output stride 16.
BOTTLENECK = NetworkConfig("bottleneck", "ToyBottleneckNet",
                           {"widths": (32, 64, 128), "strides": (2, 2, 2), "mid_width": 128, "feature_dim": 1024,
                            "blocks": 3})
#: The same two networks, their classifiers trained with RCM + MAM.
TOYRESNET_PSS = dataclasses.replace(TOYRESNET, name="toyresnet+pss", pixelsup=True)
BOTTLENECK_PSS = dataclasses.replace(BOTTLENECK, name="bottleneck+pss", pixelsup=True)
#: Networks selectable by name on the command line, in report order.
NETWORK_PRESETS: Dict[str, NetworkConfig] = {n.name: n for n in (TOYRESNET, BOTTLENECK, TOYRESNET_PSS, BOTTLENECK_PSS)}

def pixelsup_overrides(train: TrainConfig, num_images: int, rcm_form: Optional[str] = None,
                       loss_reduction: Optional[str] = None, projection: Optional[str] = None) -> Dict[str, Any]:
    """RCM + MAM on the benchmark: the VOC preset with its two schedule-bound settings scaled to the
    demo's schedule (decided before any result was seen). The EMA keeps the paper's horizon as a
    fraction of training: ``0.997 ** (13,240 / steps)`` (0.78 for the default 160 steps; at 0.997 the
    SupportNet would still be 62 % its random initialisation after 160 steps); MAM starts at the
    paper's 30 % of the epochs (epoch 3 of 10); both by
    :func:`~lpcam_plugin.methods.pixelsup.config.schedule_settings`. ``rcm_form``, ``loss_reduction``,
    ``projection``: None for the preset's (always written out, so a checkpoint trained with the default
    is reused when it is asked for by name)."""
    steps = train.epochs * math.ceil(num_images / train.batch_size)
    preset = PixelSupConfig.preset("voc")
    chosen = {"rcm_form": rcm_form, "loss_reduction": loss_reduction, "projection": projection}
    return {**schedule_settings(steps, train.epochs), "seed": train.seed,
            **{name: getattr(preset, name) if value is None else value for name, value in chosen.items()}}


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (recorded in ``results.json``).

    ``methods``: read-out names to run (``None``: every row of
    :data:`lpcam_plugin.benchmark.readouts.READOUTS`, in its order).
    ``rcm_form``: RCM's loss form for the ``+pss`` networks (``None``: the preset's).
    ``pss_reduction``: RCM's and MAM's reduction over pixels for the ``+pss`` networks (``None``: the preset's).
    ``pss_projection``: where the RCM projection sits in the ``+pss`` networks (``None``: the preset's).
    ``fcam_crf_kernel``: F-CAM's CRF kernel, ``"window"`` or ``"dense"`` (``None``: the preset's).
    ``fcam_epochs``: F-CAM's training epochs, the compute the CPU affords (2: the 48 decoders of
    ``--full`` in about 35 minutes on 2 cores; the preset's 10 is for VOC on a GPU); the preset's
    seed budget rule scales the seeds sampled per step to it (``None``: the preset's epochs).
    ``overlay_images``: images (distinct, one per class first) in each ``overlays_<network>.png``.
    ``validation_images``: size of a held-out split with masks, generated per seed from another
    seed (:func:`validation_seed`), on which F-CAM chooses its seed settings as its paper does
    (``FCAM.fit(..., validation=...)``); the reported numbers stay those of the training images.
    0 (default): no split, F-CAM's data rules.
    ``pretrained``: every classifier starts from its network's pretrained backbone (a new head), as
    the hosts' start from ImageNet (:func:`~lpcam_plugin.benchmark.pretraining.pretrained_network`);
    ``backbones``: the folder of those backbones (``None``: the shipped ones).
    """

    seeds: Tuple[int, ...] = (0,)
    networks: Tuple[NetworkConfig, ...] = (TOYRESNET,)
    methods: Optional[Tuple[str, ...]] = None
    data: SyntheticConfig = SyntheticConfig()
    train: TrainConfig = TrainConfig()
    lpcam_overrides: Dict[str, Any] = field(default_factory=dict)
    recam_selection: Optional[str] = None
    rcm_form: Optional[str] = None
    pss_reduction: Optional[str] = None
    pss_projection: Optional[str] = None
    fcam_crf_kernel: Optional[str] = None
    fcam_epochs: Optional[int] = 2
    thresholds: Tuple[float, ...] = DEFAULT_THRESHOLDS
    curve_window: float = 0.1
    overlay_images: int = 6
    export_host_files: bool = True
    validation_images: int = 0
    pretrained: bool = False
    backbones: Optional[str] = None

    @classmethod
    def full(cls, seeds: Sequence[int] = (0, 1, 2)) -> "DemoConfig":
        """Every network preset (plain and RCM + MAM classifiers), three seeds."""
        return cls(seeds=tuple(seeds), networks=tuple(NETWORK_PRESETS.values()))

    @classmethod
    def for_regime(cls, regime: str, **changes: Any) -> "DemoConfig":
        """Regime ``"A"`` (the default config: toy classifiers trained from scratch on 80-px images) or
        ``"B"``, the papers' regime (docs/design/pretrained-regime.md): :meth:`SyntheticConfig.papers_regime
        <lpcam_plugin.benchmark.synthetic.SyntheticConfig.papers_regime>`' data, classifiers fine-tuned
        from the pretrained backbones for :data:`PAPERS_REGIME_EPOCHS` epochs at a backbone learning
        rate :data:`PAPERS_REGIME_BACKBONE_LR` x the head's."""
        if regime == "A":
            return cls(**changes)
        if regime != "B":
            raise ValueError(f"regime must be 'A' or 'B', got {regime!r}")
        train = TrainConfig(epochs=PAPERS_REGIME_EPOCHS, backbone_lr_scale=PAPERS_REGIME_BACKBONE_LR)
        return cls(**{"data": SyntheticConfig.papers_regime(), "train": train, "pretrained": True, **changes})

    @property
    def regime(self) -> str:
        """``"A"`` or ``"B"``: the regime of the data (:meth:`for_regime`)."""
        return self.data.regime

    def quick(self) -> "DemoConfig":
        """The same run at small sizes, for a fast smoke run (numbers are noisier): 240 images, and
        8 epochs from scratch (regime A) or 3 of fine-tuning (regime B)."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, num_images=240),
                                   train=dataclasses.replace(self.train, epochs=3 if self.pretrained else 8))

    def to_dict(self) -> Dict[str, Any]:
        """The run's settings as JSON-able values (``results.json``)."""
        out = dataclasses.asdict(self)
        out["data"] = self.data.to_dict()
        return out


#: Regime B's fine-tuning epochs (IRN's ``cam_num_epoches``) and backbone learning-rate factor (the hosts
#: train new layers at 10x the pretrained ones').
PAPERS_REGIME_EPOCHS = 5
PAPERS_REGIME_BACKBONE_LR = 0.1


def validation_seed(seed: int) -> int:
    """The generator seed of seed ``seed``'s held-out validation split (never a training seed in use)."""
    return VALIDATION_SEED_OFFSET + seed


#: Offset of the validation splits' generator seeds from the training seeds.
VALIDATION_SEED_OFFSET = 1_000_000


@dataclass
class SeedResult:
    """One (network, seed): a :class:`SweepResult` per method, diagnostics, timings and notes.

    ``seconds`` holds the wall time of each stage (``"classifier"``, ``"features"``, one entry per
    read-out, ``"evaluation"``) and their ``"total"``; a fit that several read-outs share is
    charged to the first one that needs it. Data generation (shared by the networks) and figures
    count only in the run's wall time. ``network_stats``: classifier training numbers
    (``cached`` = 1 when the checkpoint was reused) and feature statistics.
    """

    seed: int
    network: str
    sweeps: Dict[str, SweepResult]
    diagnostics: Dict[str, Dict[str, float]]
    network_stats: Dict[str, float]
    notes: Dict[str, str]
    seconds: Dict[str, float]
    automatic: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def pixelsup_pairs(config: DemoConfig) -> List[Tuple[NetworkConfig, NetworkConfig]]:
    """``(plain, +pss)`` pairs of networks of this run: same kind and options, classifier trained
    without / with RCM + MAM."""
    plain = [n for n in config.networks if not n.pixelsup]
    return [(p, n) for n in config.networks if n.pixelsup for p in plain
            if (p.kind, p.options) == (n.kind, n.options)]
