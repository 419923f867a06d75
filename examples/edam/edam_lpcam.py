"""LPCAM for EDAM: fit prototypes, then write EDAM's CAM-step files. Run from an EDAM checkout.

    python edam_lpcam.py fit  --weights EDAM_final.pth --voc12_root VOC2012 --list voc12/train.txt --bank lpcam_edam.npz
    python edam_lpcam.py cams --weights EDAM_final.pth --voc12_root VOC2012 --list voc12/train_aug.txt \
        --bank lpcam_edam.npz --out_cam out_lpcam --out_crf out_lpcam_crf \
        --out_crf_pred pseudo_labels --sal_path saliency --theta 0.2 --alpha 0.000001 --beta 0.99999
"""
import argparse
import importlib
import logging

import numpy as np
import torch
import voc12.data
from tool import imutils

from lpcam_plugin import PrototypeBank
from lpcam_plugin.adapters import edam


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["fit", "cams"])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--network", default=edam.DEFAULT_NETWORK)
    parser.add_argument("--voc12_root", required=True)
    parser.add_argument("--list", required=True, help="EDAM-format list (fit: train.txt, cams: train_aug.txt)")
    parser.add_argument("--bank", required=True)
    parser.add_argument("--out_cam")
    parser.add_argument("--out_cam_pred")
    parser.add_argument("--out_crf")
    parser.add_argument("--out_crf_pred")
    parser.add_argument("--sal_path")
    parser.add_argument("--theta", type=float, default=0.5)
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--beta", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    model = importlib.import_module(args.network).Net()
    model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    edam.prepare_model(model, "cuda" if torch.cuda.is_available() else "cpu")  # EDAM's eval() returns None

    def transform(img):  # infer_cls.py's Compose([np.asarray, model.normalize, imutils.HWC_to_CHW])
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    dataset = voc12.data.VOC12ClsDatasetMSF(args.list, voc12_root=args.voc12_root, scales=(1, 0.5, 1.5, 2.0),
                                            inter_transform=transform)
    if args.step == "fit":
        edam.fit(model, dataset, baseline="host", bank_path=args.bank)
        return
    bank = PrototypeBank.load(args.bank, expected_feature_dim=4096)
    edam.run(model, bank, dataset, out_cam=args.out_cam, out_cam_pred=args.out_cam_pred, out_crf=args.out_crf,
             out_crf_pred=args.out_crf_pred, sal_path=args.sal_path, theta=args.theta, alpha=args.alpha,
             beta=args.beta, image_loader=edam.voc_image_loader(args.voc12_root))


if __name__ == "__main__":
    main()
