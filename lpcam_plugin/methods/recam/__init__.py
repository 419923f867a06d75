"""ReCAM (Chen et al., CVPR 2022): a softmax re-activation fine-tuning step (``losses``), its
settings (``config``) and the :class:`~lpcam_plugin.methods.recam.estimator.ReCAM` estimator."""
