"""EDAM's training pair list (``voc12/EDAM_train.txt``) for a checkout that lacks it.

``train_EDAM_cls.py`` reads ``--train_list voc12/EDAM_train.txt``: one line per image pair,
``/JPEGImages/<a>.jpg /JPEGImages/<b>.jpg <c>`` with ``c`` (0..19) a class both images contain
(``voc12.data.load_img_name_pair_list``). Upstream lists the file in its tree, but copies without
its large blob (shallow or partial clones, mirrors) lack it. :func:`write_pair_list` writes a list
in the same format from the image list and ``cls_labels.npy``: for each image in turn (a seeded
random order, repeated), a class drawn among its classes and a partner drawn among the other
images holding that class. It is a list of the same kind and length, not the authors' own draw.

From the EDAM checkout::

    python -m lpcam_plugin.adapters.edam.pairs --out voc12/EDAM_train.txt
"""
from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from lpcam_plugin.core.io import PathLike, atomic_write

logger = logging.getLogger(__name__)

#: Upstream's one "epoch" of pairs holds as many images as 25 epochs of ``train_aug`` (its README).
HOST_EPOCHS = 25


def read_image_list(path: PathLike) -> List[str]:
    """Image ids of an EDAM list (``/JPEGImages/<id>.jpg ...`` lines, or bare ids)."""
    ids = []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                ids.append(os.path.splitext(os.path.basename(line.split()[0]))[0])
    return ids


def draw_pairs(ids: Sequence[str], labels: Mapping[str, np.ndarray], *, epochs: float = HOST_EPOCHS,
               seed: int = 0) -> List[str]:
    """``round(epochs * len(ids) / 2)`` pair lines (each pair holds two images).

    Raises:
        ValueError: an id has no label, no image shares a class with another, or ``epochs`` <= 0.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    missing = [name for name in ids if name not in labels]
    if missing:
        raise ValueError(f"{len(missing)} ids have no label in cls_labels.npy, first {missing[0]!r}")
    holders: Dict[int, List[str]] = defaultdict(list)
    classes = {name: [int(c) for c in np.flatnonzero(np.asarray(labels[name]) > 0)] for name in ids}
    for name in ids:
        for c in classes[name]:
            holders[c].append(name)
    pairable = [name for name in ids if any(len(holders[c]) > 1 for c in classes[name])]
    if not pairable:
        raise ValueError("no two images share a class: no pair can be drawn")
    rng = np.random.default_rng(seed)
    count = max(1, round(epochs * len(ids) / 2))
    lines: List[str] = []
    while len(lines) < count:
        for index in rng.permutation(len(pairable)):
            first = pairable[int(index)]
            shared = [c for c in classes[first] if len(holders[c]) > 1]
            c = shared[int(rng.integers(len(shared)))]
            others = [name for name in holders[c] if name != first]
            second = others[int(rng.integers(len(others)))]
            lines.append(f"/JPEGImages/{first}.jpg /JPEGImages/{second}.jpg {c}")
            if len(lines) == count:
                break
    return lines


def write_pair_list(out: PathLike = "voc12/EDAM_train.txt", image_list: PathLike = "voc12/train_aug.txt",
                    labels: PathLike = "voc12/cls_labels.npy", *, epochs: float = HOST_EPOCHS, seed: int = 0) -> int:
    """Write EDAM's pair list ``out`` from ``image_list`` and ``labels``; return the number of pairs.

    Args:
        out: the file ``train_EDAM_cls.py --train_list`` reads.
        image_list: the images to pair (EDAM list format).
        labels: ``cls_labels.npy`` (``{id: (20,) float32}``, pickled as EDAM ships it).
        epochs: how many passes over ``image_list`` the list holds (2 images a pair).
        seed: the draw's seed.
    """
    table = np.load(labels, allow_pickle=True).item()
    lines = draw_pairs(read_image_list(image_list), table, epochs=epochs, seed=seed)
    with atomic_write(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    logger.info("%d pairs written to %s", len(lines), out)
    return len(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m lpcam_plugin.adapters.edam.pairs``: write the pair list."""
    parser = argparse.ArgumentParser(description="write EDAM's voc12/EDAM_train.txt pair list")
    parser.add_argument("--out", default="voc12/EDAM_train.txt")
    parser.add_argument("--list", dest="image_list", default="voc12/train_aug.txt")
    parser.add_argument("--labels", default="voc12/cls_labels.npy")
    parser.add_argument("--epochs", type=float, default=HOST_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_pair_list(args.out, args.image_list, args.labels, epochs=args.epochs, seed=args.seed)
    return 0


__all__ = ["HOST_EPOCHS", "draw_pairs", "main", "read_image_list", "write_pair_list"]

if __name__ == "__main__":
    raise SystemExit(main())
