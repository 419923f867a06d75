"""Stand-in for AMN's ``run_sample.py``: same argument names and defaults, fewer steps.

As upstream, the ``*_pass`` flags use ``str2bool`` and default to False.
"""
import argparse
import os

if __name__ == '__main__':
    def str2bool(v):
        if isinstance(v, bool):
            return v
        if v.lower() in ('yes', 'true', 't', 'y', '1'):
            return True
        if v.lower() in ('no', 'false', 'f', 'n', '0'):
            return False
        raise argparse.ArgumentTypeError('Boolean value expected.')

    parser = argparse.ArgumentParser()
    parser.add_argument("--num_workers", default=1, type=int)
    parser.add_argument("--voc12_root", required=True, type=str)
    parser.add_argument("--train_list", default="voc12/train_aug.txt", type=str)
    parser.add_argument("--infer_list", default="voc12/train.txt", type=str)
    parser.add_argument("--chainer_eval_set", default="train", type=str)
    parser.add_argument("--cam_network", default="net.resnet50_cam", type=str)
    parser.add_argument("--cam_eval_thres", default=0.25, type=float)
    parser.add_argument("--cam_scales", default=(1.0, 0.5, 1.5, 2.0))
    parser.add_argument("--amn_network", default="net.resnet50_amn", type=str)
    parser.add_argument("--conf_fg_thres", default=0.45, type=float)
    parser.add_argument("--conf_bg_thres", default=0.15, type=float)
    parser.add_argument("--sem_seg_bg_thres", default=0.25)
    parser.add_argument("--cam_weights_name", default="sess/res50_cam.pth", type=str)
    parser.add_argument("--amn_weights_name", default="sess/res50_amn.pth", type=str)
    parser.add_argument("--cam_out_dir", default="result/cam", type=str)
    parser.add_argument("--ir_label_out_dir", default="result/ir_label", type=str)
    parser.add_argument("--amn_cam_out_dir", default="result/amn_cam", type=str)
    parser.add_argument("--amn_ir_label_out_dir", default="result/amn_ir_label", type=str)
    parser.add_argument("--sem_seg_out_dir", default="result/sem_seg", type=str)
    parser.add_argument("--train_cam_pass", type=str2bool, default=False)
    parser.add_argument("--make_cam_pass", type=str2bool, default=False)
    parser.add_argument("--eval_cam_pass", type=str2bool, default=False)
    parser.add_argument("--cam_to_ir_label_pass", type=str2bool, default=False)
    parser.add_argument("--train_amn_pass", type=str2bool, default=False)
    parser.add_argument("--make_amn_cam_pass", type=str2bool, default=False)
    parser.add_argument("--eval_amn_cam_pass", type=str2bool, default=False)
    parser.add_argument("--amn_cam_to_ir_label_pass", type=str2bool, default=False)
    parser.add_argument("--make_sem_seg_pass", type=str2bool, default=False)
    args = parser.parse_args()

    os.makedirs("sess", exist_ok=True)
    for d in (args.cam_out_dir, args.ir_label_out_dir, args.amn_cam_out_dir, args.amn_ir_label_out_dir,
              args.sem_seg_out_dir):
        os.makedirs(d, exist_ok=True)
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

    if args.train_amn_pass is True:
        import step.train_amn
        step.train_amn.run(args)

    if args.make_amn_cam_pass is True:
        import step.make_amn_cam
        step.make_amn_cam.run(args)

    if args.eval_amn_cam_pass is True:
        import step.eval_amn_cam
        step.eval_amn_cam.run(args)

    if args.amn_cam_to_ir_label_pass is True:
        import step.amn_cam_to_ir_label
        step.amn_cam_to_ir_label.run(args)

    if args.make_sem_seg_pass is True:
        import step.make_sem_seg_labels
        step.make_sem_seg_labels.run(args)
