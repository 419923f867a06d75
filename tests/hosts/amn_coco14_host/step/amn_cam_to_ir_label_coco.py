"""Stand-in for AMN coco14's ``step/amn_cam_to_ir_label_coco.py``: as ``cam_to_ir_label_coco`` on
``args.amn_cam_out_dir`` -> ``args.amn_ir_label_out_dir``, channel 0 (background) of ``high_res`` dropped."""
import coco14.dataloader
from misc import torchutils
from step.cam_to_ir_label_coco import _work


def run(args):
    dataset = coco14.dataloader.COCO14ImageDataset(args.train_list, coco14_root=args.coco14_root, img_normal=None,
                                                   to_torch=False)
    dataset = torchutils.split_dataset(dataset, 16)
    for process_id in range(16):
        _work(process_id, dataset, args, "amn_cam_out_dir", "amn_ir_label_out_dir", drop_background=True)
