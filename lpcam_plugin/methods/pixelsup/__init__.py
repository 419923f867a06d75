"""Pixel-level self-supervision (Yoon et al., "Exploring Pixel-level Self-supervision for Weakly
Supervised Semantic Segmentation"): while the host trains its classifier (MainNet F), an EMA
copy of it (SupportNet G) turns its own multi-scale CAMs into pixel-level supervision: the
Regional Contrastive Module (RCM) pulls each pixel's embedding toward the prototype of the
region G assigns it to, and the Multi-scale Attentive Module (MAM) pulls F's CAMs at each scale
toward cosine-distance-weighted sums of G's, making the CAMs denser and sharper. ``losses``
holds the equations as pure functions, ``config`` the settings and presets, and ``module`` the
:class:`~lpcam_plugin.methods.pixelsup.module.PixelSelfSupervision` step the host's loop calls."""
