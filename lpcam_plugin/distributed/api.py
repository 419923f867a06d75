"""The scale-out API in one import: *fit* (:mod:`lpcam_plugin.distributed.fit`) and *infer*
(:mod:`lpcam_plugin.distributed.infer`) on ``torch.distributed``.

Launch with ``torchrun --nproc_per_node N -m lpcam_plugin fit|infer ...`` (the commands:
:mod:`lpcam_plugin.cli.scaleout`, the jobs they run: :mod:`lpcam_plugin.distributed.jobs`), or
call these functions from a script that has initialised a process group; they run in a single
process when none is initialised.
"""
from lpcam_plugin.distributed.fit import collect_features, fit_distributed, fit_prototypes_distributed, shard_indices
from lpcam_plugin.distributed.infer import (
    MANIFEST_NAME,
    MAP_SUFFIX,
    MAPS_FORMAT,
    InferResult,
    image_maps,
    infer_distributed,
    map_path,
    map_producer,
    read_map,
)

__all__ = [
    "InferResult",
    "MANIFEST_NAME",
    "MAPS_FORMAT",
    "MAP_SUFFIX",
    "collect_features",
    "fit_distributed",
    "fit_prototypes_distributed",
    "image_maps",
    "infer_distributed",
    "map_path",
    "map_producer",
    "read_map",
    "shard_indices",
]
