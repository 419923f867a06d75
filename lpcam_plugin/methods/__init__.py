"""The method family, one module or subpackage per method: ``cam`` (the baseline read-out),
``lpcam`` (local prototypes), ``recam`` (softmax re-activation), ``fcam`` (a full-resolution
decoder over any read-out), ``pixelsup`` (RCM + MAM pixel-level self-supervision while the
classifier trains). Methods import plumbing (:mod:`lpcam_plugin.core`), never adapters, the
benchmark or scale-out."""
