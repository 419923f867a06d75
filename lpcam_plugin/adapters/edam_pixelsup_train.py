"""RCM + MAM (:class:`~lpcam_plugin.methods.pixelsup.module.PixelSelfSupervision`) in EDAM's classifier training
(``allenwu97/EDAM`` at ``de0af41``, ``train_EDAM_cls.py``).

``train_EDAM_cls.py`` keeps its whole loop under ``if __name__ == '__main__'``, so there is
nothing to patch: this module is a drop-in for the script. From the EDAM checkout::

    python -m lpcam_plugin.adapters.edam_pixelsup_train <train_EDAM_cls.py's own arguments> [--lpcam_pss_* ...]

What stays EDAM's (re-implemented here step by step, the host's own classes imported):

- the network ``getattr(importlib.import_module(args.network), 'Net')()``, its
  ``get_parameter_groups()`` taken before ``model.train()`` as the script does, the ``--weights``
  initialisation (``.params`` through ``network.resnet38d.convert_mxnet_to_torch``, else
  ``torch.load``) loaded with ``strict=False``, then ``model.train()`` (it returns None; it
  freezes ``not_training`` and every BatchNorm);
- the data ``voc12.data.VOC12EDAMClsDataset(args.train_list, ...)``: image pairs with their
  common class, 20 sampled class ids ``label_idx`` (present classes first, absent ones shuffled)
  and 40 pair labels; transforms ``imutils.RandomResizeLong(256, 512)``, horizontal flip, colour
  jitter (brightness / contrast / saturation 0.3, hue 0.1), ``model.normalize``,
  ``imutils.RandomCrop(args.crop_size)``, ``HWC_to_CHW``; unshuffled, ``drop_last``;
- the loss ``BCEWithLogitsLoss(model(img, label_idx), label)``; the script's ``DataParallel``
  gives each GPU one pair (``Net.forward`` asserts two images): here the pairs of a batch run
  one after the other on one device and the loss is the mean over all of them, the same number
  as the README's ``--batch_size 4`` on four GPUs;
- the optimizer ``tool.torchutils.PolyOptimizer`` with the six groups (lr x1, x2 (no decay), x10,
  x20 (no decay), x1, x1 (no decay)), ``max_step = len(dataset) // batch_size x max_epoches``,
  ``warm_up_step=2000``; the RCM projection joins as a seventh group at ``10 lr`` with
  ``wt_dec`` (as the new layers);
- the weights ``<session_name>/<global_step // 1322>.pth`` = ``model.state_dict()`` written
  every ``max_step // 25`` steps (every step when ``max_step < 25``, where the script divides
  by zero) and once more after the last step, which ``infer_cls.py --weights`` (and this
  package's EDAM adapters) load strictly.

What changes: per step ``total = edam_bce + pss(images, labels, epoch=...)["total"]`` with the
pair images as ``(2B, 3, H, W)`` and each image's 20-class label rebuilt from ``label`` and
``label_idx``; ``pss`` reads ``bn7`` (the "conv6" features, D = 4096) and EDAM's own CAM
``|L2-normalise_channels(mask_layer(bn7))|`` channels 0..19 (:func:`edam_cam_head`) for its
region masks and MAM, has ``cls_weight=0`` (EDAM's classifier is not GAP-linear; its BCE is the
classification term), and ``pss.update_support()`` runs after each optimizer step. The epoch
``pss`` sees is the script's own count, ``global_step // 1322`` (``--lpcam_pss_epoch_steps``);
MAM starts at 30% of the run (the paper's epoch 6 of 20) unless ``--lpcam_pss_mam_start_epoch``
says otherwise. No tensorboard ``runs/`` and no ``<session_name>.log`` are written (logging
instead); ``tensorboardX``, ``prefetch_generator`` and torchvision are not needed.

Device: ``--lpcam_pss_device`` (default ``auto``: CUDA when available). EDAM's
``Net.forward`` calls ``segment_info....cuda()`` unconditionally (``network/resnet38_EDAM_cls.py``,
in ``forward``): on CUDA the forward runs under ``torch.cuda.device(device)``; on any other device
``torch.Tensor.cuda`` is redirected to the model's device for the duration of that call only
(:func:`cuda_calls_to`), so the unchanged network trains on a CPU too.

Resume: at every weights save the training state (F, ``pss.state_dict()``, optimizer with its
``global_step``, loss sums, per-epoch means ``history``) is written atomically to
``<session_name>.pss_train.pt`` (``torch.load(weights_only=True)``); a rerun with the same
settings continues from that step (mid-epoch: each pair's augmentation and label sampling is
drawn from ``(seed, epoch, index)``, dropout from ``(seed, step)``), and trains as the
uninterrupted run would.

One process: the script's ``DataParallel`` is replaced by the loop over pairs; under an
initialised process group (``torchrun``) the adapter refuses to run.

The pieces live in :mod:`lpcam_plugin.adapters.edam` (``train_options``, ``train_host``, ``train``).
"""
from __future__ import annotations

from lpcam_plugin.adapters.common.options import (
    PAPER_MAM_FRACTION,
    add_config_options,
    add_run_options,
    config_from_args,
    loader_workers,
)
from lpcam_plugin.adapters.edam.train import METHOD_NAME, SAVES_PER_RUN, STATE_FORMAT, main, train
from lpcam_plugin.adapters.edam.train_host import (
    NUM_CLASSES,
    SAMPLE_NUM,
    WARM_UP_STEP,
    ColorJitter,
    PairTransform,
    build_optimizer,
    cuda_calls_to,
    edam_cam_head,
    host_logits,
    image_labels,
    load_initial_weights,
)
from lpcam_plugin.adapters.edam.train_options import HOST_EPOCH_STEPS, TrainOptions, add_arguments, build_parser

__all__ = ["HOST_EPOCH_STEPS", "METHOD_NAME", "NUM_CLASSES", "PAPER_MAM_FRACTION", "SAMPLE_NUM", "SAVES_PER_RUN",
           "STATE_FORMAT", "WARM_UP_STEP", "ColorJitter", "PairTransform", "TrainOptions", "add_arguments",
           "add_config_options", "add_run_options", "build_optimizer", "build_parser", "config_from_args",
           "cuda_calls_to", "edam_cam_head", "host_logits", "image_labels", "load_initial_weights", "loader_workers",
           "main", "train"]

if __name__ == "__main__":
    main()
