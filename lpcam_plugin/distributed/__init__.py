"""Scale-out: LPCAM fitting and inference over ``torch.distributed`` ranks (torchrun, SLURM),
and the ``lpcam fit`` / ``lpcam infer`` subcommands (:mod:`lpcam_plugin.distributed.cli`)."""
from lpcam_plugin.distributed.api import (MAP_SUFFIX, InferResult, collect_features, fit_distributed,
                                          fit_prototypes_distributed, image_maps, infer_distributed, map_path,
                                          read_map, shard_indices)

__all__ = ["InferResult", "MAP_SUFFIX", "collect_features", "fit_distributed", "fit_prototypes_distributed",
           "image_maps", "infer_distributed", "map_path", "read_map", "shard_indices"]
