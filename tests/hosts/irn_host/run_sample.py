"""Stand-in for IRN's ``run_sample.py``: same argument names and defaults, fewer steps.

As upstream, the ``*_pass`` flags default to True, have no type and are tested with ``is True``:
passing any value on the command line disables that step.
"""
import argparse
import os

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_workers", default=1, type=int)
    parser.add_argument("--voc12_root", required=True, type=str)
    parser.add_argument("--train_list", default="voc12/train_aug.txt", type=str)
    parser.add_argument("--infer_list", default="voc12/train.txt", type=str)
    parser.add_argument("--chainer_eval_set", default="train", type=str)
    parser.add_argument("--cam_network", default="net.resnet50_cam", type=str)
    parser.add_argument("--cam_eval_thres", default=0.15, type=float)
    parser.add_argument("--cam_scales", default=(1.0, 0.5, 1.5, 2.0))
    parser.add_argument("--conf_fg_thres", default=0.30, type=float)
    parser.add_argument("--conf_bg_thres", default=0.05, type=float)
    parser.add_argument("--sem_seg_bg_thres", default=0.25)
    parser.add_argument("--cam_weights_name", default="sess/res50_cam.pth", type=str)
    parser.add_argument("--cam_out_dir", default="result/cam", type=str)
    parser.add_argument("--ir_label_out_dir", default="result/ir_label", type=str)
    parser.add_argument("--sem_seg_out_dir", default="result/sem_seg", type=str)
    parser.add_argument("--train_cam_pass", default=True)
    parser.add_argument("--make_cam_pass", default=True)
    parser.add_argument("--eval_cam_pass", default=True)
    parser.add_argument("--cam_to_ir_label_pass", default=True)
    parser.add_argument("--make_sem_seg_pass", default=True)
    args = parser.parse_args()

    os.makedirs("sess", exist_ok=True)
    os.makedirs(args.cam_out_dir, exist_ok=True)
    os.makedirs(args.ir_label_out_dir, exist_ok=True)
    os.makedirs(args.sem_seg_out_dir, exist_ok=True)
    print(vars(args))

    if args.train_cam_pass is True:
        import step.train_cam
        step.train_cam.run(args)

    if args.make_cam_pass is True:
        import step.make_cam
        step.make_cam.run(args)

    if args.eval_cam_pass is True:
        import step.eval_cam
        step.eval_cam.run(args)

    if args.cam_to_ir_label_pass is True:
        import step.cam_to_ir_label
        step.cam_to_ir_label.run(args)

    if args.make_sem_seg_pass is True:
        import step.make_sem_seg_labels
        step.make_sem_seg_labels.run(args)
