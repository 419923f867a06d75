"""The IRN family (``jiwoon-ahn/irn`` and its fork ``gaviotas/AMN``): one machinery for both CAM
steps, the ReCAM and F-CAM steps on IRN's stage-1 network, and the RCM+MAM ``train_cam`` drop-in.

Both hosts run a ResNet-50 ``CAM`` network over ``voc12.dataloader.VOC12ClassificationDatasetMSF``
items (``img``: one ``(2, 3, h_s, w_s)`` image + flip stack per scale, ``size`` (H, W), 20-d
``label``) and save one pickled dict ``{"keys", "cam", "high_res"}`` per image. Modules:

- ``options``: the ``--lpcam_*`` options, resolved once into :class:`~.options.LPCAMOptions`;
- ``host``: :class:`~.host.HostSpec`, the network, the dataset, the geometry; ``irn_host`` and
  ``amn_host``: the two CAM steps as specs;
- ``bank``: fitting and reusing the prototype bank;
- ``readouts``: a registry read-out as this host runs it, in its geometry; ``prepare``: the
  network and read-out of ``--lpcam_method``;
- ``files``: done logs, writing a shard; ``runner``: the entry points;
- ``recam_step``, ``fcam_step`` and ``crop_batches`` (their training batches);
- ``train_cam``: RCM+MAM classifier training.

The public faces are :mod:`lpcam_plugin.adapters.irn`, :mod:`~lpcam_plugin.adapters.amn` and
:mod:`~lpcam_plugin.adapters.pixelsup_train`; the host modules are imported from the user's fork
at call time.
"""
