"""Stand-in for EDAM's ``infer_cls.py``: the same flags and per-image loop, on CPU.

Differences from upstream (none in the math): no ``.cuda()``, a plain function instead of
``torchvision.transforms.Compose``, a thread pool of 2 instead of ``BatchThreader`` (still calling
``forward_cam`` from several threads on one model), ``imageio`` replaced by Pillow.
"""
import argparse
import importlib
import os.path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
import voc12.data
from PIL import Image
from tool import imutils

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True, type=str)
    parser.add_argument("--network", default="network.resnet_EDAM_cls", type=str)
    parser.add_argument("--infer_list", default="voc12/train.txt", type=str)
    parser.add_argument("--num_workers", default=2, type=int)
    parser.add_argument("--voc12_root", required=True, type=str)
    parser.add_argument("--out_cam", default=None, type=str)
    parser.add_argument("--out_cam_pred", default=None, type=str)
    parser.add_argument("--out_crf", default=None, type=str)
    parser.add_argument("--theta", default=0.5, type=float)
    parser.add_argument("--alpha", default=0, type=float)
    parser.add_argument("--beta", default=1, type=float)
    parser.add_argument("--sal_path", default=None, type=str)
    args = parser.parse_args()

    model = importlib.import_module(args.network).Net()
    model.load_state_dict(torch.load(args.weights))
    model.eval()

    def transform(img):
        return imutils.HWC_to_CHW(model.normalize(np.asarray(img)))

    dataset = voc12.data.VOC12ClsDatasetMSF(args.infer_list, voc12_root=args.voc12_root,
                                            scales=(1, 0.5, 1.5, 2.0), inter_transform=transform)
    loader = torch.utils.data.DataLoader(dataset, shuffle=False, num_workers=0)
    for img_name, img_list, label in loader:
        img_name = img_name[0]
        label = label[0]
        orig_img = np.asarray(Image.open(voc12.data.get_img_path(img_name, args.voc12_root)))
        orig_img_size = orig_img.shape[:2]

        def _work(i, img):
            with torch.no_grad():
                cam = model.forward_cam(img)
                cam = F.interpolate(cam, orig_img_size, mode="bilinear", align_corners=False)[0]
                cam = cam.cpu().numpy()
                if i % 2 == 1:
                    cam = np.flip(cam, axis=-1)
                return cam

        with ThreadPoolExecutor(max_workers=args.num_workers) as pool:
            cam_list = list(pool.map(_work, range(8), [img_list[i] for i in range(8)]))
        sum_cam = np.sum(cam_list, axis=0)
        norm_cam = sum_cam / (np.max(sum_cam, (1, 2), keepdims=True))
        cam_dict = {}
        for i in range(20):
            if label[i] > 1e-5:
                cam_dict[i] = norm_cam[i]

        if args.out_cam is not None:
            if not os.path.exists(args.out_cam):
                os.mkdir(args.out_cam)
            np.save(os.path.join(args.out_cam, img_name + ".npy"), cam_dict)

        if args.out_cam_pred is not None:
            if not os.path.exists(args.out_cam_pred):
                os.mkdir(args.out_cam_pred)
            h, w = list(cam_dict.values())[0].shape
            tensor = np.zeros((21, h, w), np.float32)
            for key in cam_dict.keys():
                tensor[key + 1] = cam_dict[key]
            if args.sal_path is not None:
                sal_map = np.array(Image.open(os.path.join(args.sal_path, img_name + ".png")))
                sal_map = np.where(sal_map <= args.theta * 100, 1, 0)
                tensor = np.where(tensor < args.alpha, -2, tensor)
                tensor = np.where(tensor > args.beta, 2, tensor)
                tensor[0, :, :] = sal_map
            else:
                tensor[0, :, :] = args.theta
            pred = np.argmax(tensor, axis=0)
            Image.fromarray(pred.astype(np.uint8)).save(os.path.join(args.out_cam_pred, img_name + ".png"))

        if args.out_crf is not None:
            if not os.path.exists(args.out_crf):
                os.mkdir(args.out_crf)
            v = np.array(list(cam_dict.values()))
            bg_score = np.power(1 - np.max(v, axis=0, keepdims=True), 1)
            bgcam_score = np.concatenate((bg_score, v), axis=0)
            crf_score = imutils.crf_inference(orig_img, bgcam_score, t=3, labels=bgcam_score.shape[0])
            crf = {0: crf_score[0]}
            for i, key in enumerate(cam_dict.keys()):
                crf[key + 1] = crf_score[i + 1]
            np.save(os.path.join(args.out_crf, img_name + ".npy"), crf)
