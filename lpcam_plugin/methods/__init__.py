"""The method family, one module or subpackage per method: ``cam`` (the baseline read-out),
``lpcam`` (local prototypes) and ``recam`` (softmax re-activation). Methods import plumbing
(:mod:`lpcam_plugin.core`), never adapters, the benchmark or scale-out."""
