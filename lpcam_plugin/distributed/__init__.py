"""Scale-out: LPCAM fitting (:mod:`~lpcam_plugin.distributed.fit`) and inference
(:mod:`~lpcam_plugin.distributed.infer`) over ``torch.distributed`` ranks (torchrun, SLURM), the
jobs the ``lpcam fit`` / ``lpcam infer`` commands run (:mod:`~lpcam_plugin.distributed.jobs`; the
commands: :mod:`lpcam_plugin.cli.scaleout`). It imports methods and plumbing, never the benchmark."""
from lpcam_plugin.distributed.api import (
    MAP_SUFFIX,
    InferResult,
    collect_features,
    fit_distributed,
    fit_prototypes_distributed,
    image_maps,
    infer_distributed,
    map_path,
    read_map,
    shard_indices,
)

__all__ = ["InferResult", "MAP_SUFFIX", "collect_features", "fit_distributed", "fit_prototypes_distributed",
           "image_maps", "infer_distributed", "map_path", "read_map", "shard_indices"]
