"""Stand-in for MCTformer's ``main.py`` at ``9606597``: the ``--gen_attention_maps`` path only.

The flags of the generation path keep upstream's names and defaults, and the lines that
``examples/mctformer/main.patch`` touches (the end of ``get_args_parser`` and the generation
branch) read as upstream's, so the patch applies here as it does to the real file. Differences:
no training, evaluation or fine-tuning code, no timm (the model comes from ``models`` by its
name), and only the gen-mode dataset is built (upstream also builds the training and validation
ones).
"""
import argparse
import random

import models
import numpy as np
import torch
from datasets import build_dataset
from engine import generate_attention_maps_ms


def get_args_parser():
    parser = argparse.ArgumentParser('stand-in MCTformer main.py (generation only)', add_help=False)
    parser.add_argument('--model', default='deit_small_MCTformerV2_patch16_224', type=str)
    parser.add_argument('--input-size', default=224, type=int)
    parser.add_argument('--data-path', default='', type=str)
    parser.add_argument('--img-list', default='', type=str)
    parser.add_argument('--data-set', default='', type=str)
    parser.add_argument('--label-file-path', type=str, default=None)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--resume', default='')
    parser.add_argument('--num_workers', default=10, type=int)
    parser.add_argument('--gen_attention_maps', action='store_true')
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--attention-dir', type=str, default=None)
    parser.add_argument('--layer-index', type=int, default=12)
    parser.add_argument('--patch-attn-refine', action='store_true')
    parser.add_argument('--visualize-cls-attn', action='store_true')
    parser.add_argument('--cam-npy-dir', type=str, default=None)
    parser.add_argument("--scales", nargs='+', type=float)
    parser.add_argument('--attention-type', type=str, default='fused')
    parser.add_argument('--out-crf', type=str, default=None)
    parser.add_argument("--low_alpha", default=1, type=int)
    parser.add_argument("--high_alpha", default=12, type=int)

    return parser

def same_seeds(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def main(args):
    device = torch.device(args.device)
    same_seeds(0)
    dataset_train_, args.nb_classes = build_dataset(is_train=False, gen_attn=True, args=args)
    data_loader_train_ = torch.utils.data.DataLoader(dataset_train_, batch_size=1, num_workers=args.num_workers,
                                                     drop_last=False)
    model = getattr(models, args.model)(pretrained=False, num_classes=args.nb_classes)
    model.to(device)
    if args.gen_attention_maps:
        checkpoint = torch.load(args.resume, map_location='cpu')
        model.load_state_dict(checkpoint['model'])
        generate_attention_maps_ms(data_loader_train_, model, device, args)
        return

    raise NotImplementedError("the stand-in main.py generates maps only (--gen_attention_maps)")


if __name__ == '__main__':
    parser = argparse.ArgumentParser('stand-in MCTformer main.py', parents=[get_args_parser()])
    main(parser.parse_args())
