"""LPCAM (Chen & Sun, CVPR 2023): split, pools, K-means, selection, the prototype bank, maps and
the :class:`~lpcam_plugin.methods.lpcam.estimator.LPCAM` estimator."""
