"""The LPCAM step inside MCTformer's ``main.py`` (``examples/mctformer/main.patch``).

The patch adds :func:`add_arguments` to ``get_args_parser()`` and calls :func:`main_step` in the
``--gen_attention_maps`` branch, right after the checkpoint is loaded and before the host's own
``generate_attention_maps_ms`` call:

- ``--lpcam-fit --lpcam-bank FILE``: fit the prototypes (:func:`~lpcam_plugin.adapters.mctformer.fit`,
  split by the host CAM of ``--attention-type`` at ``--layer-index``) and write ``FILE``;
- ``--lpcam-bank FILE``: the unchanged ``generate_attention_maps_ms`` inside
  :func:`~lpcam_plugin.adapters.mctformer.patch`, which writes LPCAM dicts and CRF dicts;
- neither flag: nothing happens here and the host generates its own maps, as before the patch.

:data:`MAIN_PATCH` is the text of ``examples/mctformer/main.patch``; :func:`apply_patch` applies
such a unified diff by matching its context (line numbers may differ), which ``lpcam check-host``
uses to run the patched ``main.py`` of a fork without writing into it.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, List, Optional

from torch import nn

logger = logging.getLogger(__name__)

#: ``examples/mctformer/main.patch`` (tests keep the two identical; blank context lines are empty,
#: which ``git apply`` and ``patch`` accept).
MAIN_PATCH = """\
--- a/main.py
+++ b/main.py
@@ -144,6 +144,8 @@
     parser.add_argument("--low_alpha", default=1, type=int)
     parser.add_argument("--high_alpha", default=12, type=int)

+    from lpcam_plugin.adapters import mctformer as lpcam_mct  # LPCAM
+    lpcam_mct.add_arguments(parser)  # LPCAM: --lpcam-bank, --lpcam-fit, --lpcam-num-clusters
     return parser

 def same_seeds(seed):
@@ -279,6 +281,9 @@
     if args.gen_attention_maps:
         checkpoint = torch.load(args.resume, map_location='cpu')
         model.load_state_dict(checkpoint['model'])
+        from lpcam_plugin.adapters import mctformer as lpcam_mct  # LPCAM
+        if lpcam_mct.main_step(args, model, data_loader_train_, device, generate_attention_maps_ms):  # LPCAM
+            return  # LPCAM: prototypes fitted, or LPCAM maps written; without --lpcam-* the host's own maps below
         generate_attention_maps_ms(data_loader_train_, model, device, args)
         return

"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--lpcam-bank``, ``--lpcam-fit`` and ``--lpcam-num-clusters`` to MCTformer's parser."""
    group = parser.add_argument_group("LPCAM (lpcam_plugin)")
    group.add_argument("--lpcam-bank", dest="lpcam_bank", type=str, default=None,
                       help="prototype bank: written by --lpcam-fit, else read to write LPCAM maps "
                            "(absent: the host's own maps)")
    group.add_argument("--lpcam-fit", dest="lpcam_fit", action="store_true",
                       help="fit the prototypes on the gen-mode list and write --lpcam-bank")
    group.add_argument("--lpcam-num-clusters", dest="lpcam_num_clusters", type=int, default=None,
                       help="K-means clusters per class (default: the preset of the model's classes: voc 12, "
                            "coco 20)")
    return parser


def main_step(args: argparse.Namespace, model: nn.Module, loader: Any, device: Any,
              generate: Callable[[Any, nn.Module, Any, argparse.Namespace], Any]) -> bool:
    """The LPCAM part of ``main.py``'s generation branch; ``True`` when it did the branch's work.

    Args:
        args: ``main.py``'s arguments (``lpcam_bank``, ``lpcam_fit``, ``lpcam_num_clusters``,
            ``attention_type``, ``layer_index``, ``patch_attn_refine``; a namespace without the
            ``--lpcam-*`` fields counts as neither flag given).
        model: the loaded MCTformer-V2, already on ``device``.
        loader: ``data_loader_train_`` (gen mode, batch size 1; its dataset's ``img_name_list``
            names the images).
        device: the host's device.
        generate: the host's ``generate_attention_maps_ms``.

    Raises:
        ValueError: ``--lpcam-fit`` without ``--lpcam-bank``.
    """
    bank_path: Optional[str] = getattr(args, "lpcam_bank", None)
    if not getattr(args, "lpcam_fit", False) and bank_path is None:
        return False
    if bank_path is None:
        raise ValueError("--lpcam-fit needs --lpcam-bank: the file the prototypes are written to")
    from lpcam_plugin.adapters.mctformer.fitting import fit
    from lpcam_plugin.adapters.mctformer.head_patch import patch
    from lpcam_plugin.methods.lpcam.bank import PrototypeBank

    model.eval()  # main.py leaves the model in training mode (dropout, drop-path)
    if getattr(args, "lpcam_fit", False):
        overrides = {} if getattr(args, "lpcam_num_clusters", None) is None else \
            {"num_clusters": args.lpcam_num_clusters}
        names: Optional[List[str]] = getattr(loader.dataset, "img_name_list", None)
        fit(model, loader, names=names, baseline=args.attention_type, layer_index=args.layer_index,
            patch_attn_refine=args.patch_attn_refine, bank_path=bank_path, **overrides)
        logger.info("LPCAM prototypes written to %s", bank_path)
        return True
    bank = PrototypeBank.load(bank_path, expected_feature_dim=int(model.head.weight.shape[1]))
    with patch(model, bank):
        generate(loader, model, device, args)
    return True


def _hunks(patch_text: str) -> List[List[str]]:
    hunks: List[List[str]] = []
    for line in patch_text.splitlines():
        if line.startswith("@@"):
            hunks.append([])
        elif hunks and not line.startswith(("--- ", "+++ ")):
            hunks[-1].append(line)
    return hunks


def apply_patch(text: str, patch_text: str = MAIN_PATCH) -> str:
    """Apply a unified diff to ``text`` by its context lines (line numbers are not used).

    Raises:
        ValueError: a hunk's context does not occur exactly once (the file is not the one the patch is for).
    """
    lines = text.splitlines()
    for number, hunk in enumerate(_hunks(patch_text), 1):
        old = [line[1:] for line in hunk if not line.startswith("+")]
        new = [line[1:] for line in hunk if not line.startswith("-")]
        starts = [i for i in range(len(lines) - len(old) + 1) if lines[i:i + len(old)] == old]
        if len(starts) != 1:
            raise ValueError(f"patch hunk {number}: its context occurs {len(starts)} times, expected once")
        lines[starts[0]:starts[0] + len(old)] = new
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


__all__ = ["MAIN_PATCH", "add_arguments", "apply_patch", "main_step"]
