"""Stand-in for MCTformer's ``engine.generate_attention_maps_ms`` at ``9606597``.

Same loop and math as upstream, reading the same ``args`` fields (``args.model`` included: the
model call depends on whether the name holds ``MCTformerV1`` or ``MCTformerV2``); differences: the
device-generic ``torch.autocast`` (float16, also on CPU) replaces ``torch.cuda.amp.autocast()``, no
``MetricLogger``, no heat-map PNGs (cv2), and V1 (not built by the stand-in ``models.py``) is refused.
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def generate_attention_maps_ms(data_loader, model, device, args):
    if args.cam_npy_dir is not None:
        Path(args.cam_npy_dir).mkdir(parents=True, exist_ok=True)
    model.eval()
    img_list = open(os.path.join(args.img_list, "train_aug_id.txt")).readlines()
    index = 0
    for image_list, target in data_loader:
        images1 = image_list[0].to(device)
        target = target.to(device)
        batch_size = images1.shape[0]
        img_name = img_list[index].strip()
        index += 1

        img_temp = images1.permute(0, 2, 3, 1).detach().cpu().numpy()
        orig_images = np.zeros_like(img_temp)
        orig_images[:, :, :, 0] = (img_temp[:, :, :, 0] * 0.229 + 0.485) * 255.
        orig_images[:, :, :, 1] = (img_temp[:, :, :, 1] * 0.224 + 0.456) * 255.
        orig_images[:, :, :, 2] = (img_temp[:, :, :, 2] * 0.225 + 0.406) * 255.
        w_orig, h_orig = orig_images.shape[1], orig_images.shape[2]

        with torch.autocast(device_type=device.type, dtype=torch.float16):
            cam_list = []
            for s in range(len(image_list)):
                images = image_list[s].to(device)
                w, h = images.shape[2] - images.shape[2] % args.patch_size, images.shape[3] - images.shape[3] % args.patch_size
                w_featmap = w // args.patch_size
                h_featmap = h // args.patch_size
                if "MCTformerV1" in args.model:
                    raise NotImplementedError("the stand-in models.py builds MCTformer-V2 only")
                if "MCTformerV2" not in args.model:  # upstream: patch_attn is never assigned
                    raise UnboundLocalError(f"args.model {args.model!r} names neither MCTformerV1 nor MCTformerV2")
                output, cls_attentions, patch_attn = model(images, return_att=True, n_layers=args.layer_index,
                                                           attention_type=args.attention_type)
                patch_attn = torch.sum(patch_attn, dim=0)
                if args.patch_attn_refine:
                    cls_attentions = torch.matmul(
                        patch_attn.unsqueeze(1),
                        cls_attentions.view(cls_attentions.shape[0], cls_attentions.shape[1], -1, 1),
                    ).reshape(cls_attentions.shape[0], cls_attentions.shape[1], w_featmap, h_featmap)
                cls_attentions = F.interpolate(cls_attentions, size=(w_orig, h_orig), mode="bilinear",
                                               align_corners=False)[0]
                cls_attentions = cls_attentions.cpu().numpy() * target.clone().view(args.nb_classes, 1, 1).cpu().numpy()
                if s % 2 == 1:
                    cls_attentions = np.flip(cls_attentions, axis=-1)
                cam_list.append(cls_attentions)
            sum_cam = torch.from_numpy(np.sum(cam_list, axis=0)).unsqueeze(0).to(device)
            output = torch.sigmoid(output)

        if args.visualize_cls_attn:
            for b in range(images.shape[0]):
                if (target[b].sum()) > 0:
                    cam_dict = {}
                    for cls_ind in range(args.nb_classes):
                        if target[b, cls_ind] > 0:
                            cls_attention = sum_cam[b, cls_ind, :]
                            cls_attention = (cls_attention - cls_attention.min()) / (cls_attention.max() - cls_attention.min() + 1e-8)
                            cam_dict[cls_ind] = cls_attention.cpu().numpy()
                    if args.cam_npy_dir is not None:
                        np.save(os.path.join(args.cam_npy_dir, img_name + ".npy"), cam_dict)
                    if args.out_crf is not None:
                        for t in [args.low_alpha, args.high_alpha]:
                            orig_image = orig_images[b].astype(np.uint8).copy(order="C")
                            crf = _crf_with_alpha(cam_dict, t, orig_image)
                            folder = args.out_crf + ("_%s" % t)
                            if not os.path.exists(folder):
                                os.makedirs(folder)
                            np.save(os.path.join(folder, img_name + ".npy"), crf)


def _crf_with_alpha(cam_dict, alpha, orig_img):
    from psa.tool.imutils import crf_inference
    v = np.array(list(cam_dict.values()))
    bg_score = np.power(1 - np.max(v, axis=0, keepdims=True), alpha)
    bgcam_score = np.concatenate((bg_score, v), axis=0)
    crf_score = crf_inference(orig_img, bgcam_score, labels=bgcam_score.shape[0])
    n_crf_al = dict()
    n_crf_al[0] = crf_score[0]
    for i, key in enumerate(cam_dict.keys()):
        n_crf_al[key + 1] = crf_score[i + 1]
    return n_crf_al
