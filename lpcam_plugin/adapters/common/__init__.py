"""Pieces shared by several host families: CRF dicts, dataset items and LPCAM of every class of
the ``{class: map}`` hosts, host-rule IoU means, seeded crop batches, F-CAM maps and dict writing,
module-attribute patching, worker and process helpers, host checkpoints and the shared
command-line options. Nothing here imports a host code base."""
