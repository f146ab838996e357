"""Write the reference-protocol option files: FACD and its baselines for EDSR and RCAN at x2/x3/x4, and for the
deployed students, SwinIR-light (from SwinIR-M) at x2/x3/x4 and SRVGGNetCompact (from RRDBNet) at x4.

Every file under options/train_*.yml, options/baselines/ and options/test/ is generated here, so the families stay
consistent; tests/test_options.py fails when a committed file differs from what this script writes.
Test files read the four freely downloadable sets (Set5, Set14, B100, Urban100); Manga109 has its own test file per
recipe under options/test/manga109/.
Usage (from the repository root): python scripts/make_options.py [--out options]
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Optional

ZOO_EDSR = {2: 'be38e77d', 3: '3660f70d', 4: '76ee1c8f'}
SCALES = (2, 3, 4)
BENCHMARKS = (('Set5', 'Set5'), ('Set14', 'Set14'), ('B100', 'BSDS100'), ('Urban100', 'Urban100'))
OPTIONAL_BENCHMARKS = (('Manga109', 'Manga109'), )  # not freely downloadable: a test file of its own
COMMON_NET = "  img_range: 255.\n  rgb_mean: [0.4488, 0.4371, 0.4040]\n"
IO = {'num_in_ch': 3, 'num_out_ch': 3}
NUM_GPU = 'num_gpu: auto  # every visible GPU, or the CPU when there is none (B16G1: CUDA_VISIBLE_DEVICES=0)'


def net(arch: str, params: Dict, head: Optional[Dict] = None, scale_key: str = 'upscale', tail: str = COMMON_NET,
        ) -> Dict:
    """A network block: ``type``, ``head`` (channels), ``params``, the scale under ``scale_key``, then ``tail``."""
    return {'type': arch, 'head': IO if head is None else head, 'params': params, 'scale_key': scale_key,
            'tail': tail}


# SwinIR as the official classical (SwinIR-M) and lightweight (SwinIR-S) models: JingyunLiang/SwinIR main_test_swinir
SWINIR_M = {'img_size': 48, 'window_size': 8, 'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6,
            'mlp_ratio': 2, 'upsampler': 'pixelshuffle', 'resi_connection': '1conv'}
SWINIR_S = {'img_size': 64, 'window_size': 8, 'embed_dim': 60, 'depths': [6] * 4, 'num_heads': [6] * 4,
            'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}
SWINIR_TAIL = '  img_range: 1.\n'

FAMILIES = {
    'EDSR': {
        'teacher': net('EDSR', {'num_feat': 256, 'num_block': 32, 'res_scale': 0.1}),
        'student': net('EDSR', {'num_feat': 64, 'num_block': 16, 'res_scale': 1}),
        'teacher_taps': ['body.9', 'body.20', 'conv_after_body'],
        'student_taps': ['body.4', 'body.10', 'conv_after_body'],
        'teacher_file': lambda s: f'EDSR_Lx{s}_f256b32_DIV2K_official-{ZOO_EDSR[s]}.pth',
        'teacher_source': lambda s: ('BasicSR model zoo (Google Drive / GitHub releases of XPixelGroup/BasicSR); '
                                     'loads as it is'),
        'tag_t': 'f256b32', 'tag_s': 'f64b16',
    },
    'RCAN': {
        'teacher': net('RCAN', {'num_feat': 64, 'num_group': 10, 'num_block': 20, 'squeeze_factor': 16,
                                'res_scale': 1}),
        'student': net('RCAN', {'num_feat': 64, 'num_group': 10, 'num_block': 6, 'squeeze_factor': 16,
                                'res_scale': 1}),
        'teacher_taps': ['body.2', 'body.6', 'conv_after_body'],
        'student_taps': ['body.2', 'body.6', 'conv_after_body'],
        'teacher_file': lambda s: f'RCAN_BIX{s}.pth',
        'teacher_source': lambda s: (f'official RCAN_BIX{s}.pt (yulunzhang/RCAN) converted with '
                                     f'facd-convert-teacher RCAN_BIX{s}.pt experiments/pretrained_models/'
                                     f'RCAN_BIX{s}.pth'),
        'tag_t': 'G10B20', 'tag_s': 'G10B6',
    },
    'SwinIR': {
        'scales': SCALES,
        'teacher': net('SwinIR', SWINIR_M, head={'in_chans': 3}, tail=SWINIR_TAIL),
        'student': net('SwinIR', SWINIR_S, head={'in_chans': 3}, tail=SWINIR_TAIL),
        # thirds of the residual Swin groups (RSTB outputs are (N, H*W, C) tokens; the taps fold them into maps)
        'teacher_taps': ['layers.1', 'layers.3', 'conv_after_body'],
        'student_taps': ['layers.0', 'layers.2', 'conv_after_body'],
        'teacher_file': lambda s: f'001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth',
        'teacher_source': lambda s: 'official SwinIR release v0.0, key params; loads as it is (img_size 48: s48 file)',
        'tag_t': 'M180G6', 'tag_s': 'S60G4',
        'scratch_model': 'SwinIRModel',  # stock BasicSR: pads validation images to the window size
    },
    'Compact': {
        'scales': (4, ),
        'teacher': net('RRDBNet', {'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}, scale_key='scale', tail=''),
        'student': net('SRVGGNetCompact', {'num_feat': 64, 'num_conv': 16, 'act_type': 'prelu'}, tail=''),
        # RRDB blocks 8 and 16 of 23, conv_body; the student's body convolutions 5, 11 and 16 of 16 (body.{2n})
        'teacher_taps': ['body.7', 'body.15', 'conv_body'],
        'student_taps': ['body.10', 'body.22', 'body.32'],
        'teacher_file': lambda s: 'ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth',
        'teacher_source': lambda s: 'BasicSR model zoo (ESRGAN PSNR-oriented RRDBNet), key params; loads as it is',
        'tag_t': 'RRDB23', 'tag_s': 'C64n16',
    },
}
# the variants every family gets; the paper's two families also keep the study's and FAKD's
CORE_VARIANTS = ('FACD', 'FACDAlways', 'FD', 'KD', 'Scratch')

# variant -> (model_type, title, feature_opt block or None, kd, gate block)
VARIANTS = {
    'FACD': ('FACDModel', 'FACD: pixel + gated output KD + gated feature-domain contrastive loss (ratio-L2)',
             "  feature_opt:\n    type: FACDContrastiveLoss\n    loss_weight: 0.3\n    form: ratio\n"
             "    distance: l2\n    num_negatives: ~\n", True, "    mode: teacher_better\n    margin: 0.0\n"),
    'FACDAlways': ('FACDModel', 'FACD without the adaptive gate (every patch distilled)',
                   "  feature_opt:\n    type: FACDContrastiveLoss\n    loss_weight: 0.3\n    form: ratio\n"
                   "    distance: l2\n    num_negatives: ~\n", True, "    mode: always\n"),
    'FACDLiteral': ('FACDModel', 'FACD, our first reading: ratio-L1 contrastive loss (the default before the study)',
                    "  feature_opt:\n    type: FACDContrastiveLoss\n    loss_weight: 0.3\n    form: ratio\n"
                    "    distance: l1\n    num_negatives: ~\n", True, "    mode: teacher_better\n    margin: 0.0\n"),
    'FD': ('FACDModel', 'conventional feature distillation (FitNet-style L2 after the DR adapter) + output KD',
           "  feature_opt:\n    type: FeatureDistillLoss\n    loss_weight: 0.0003\n    criterion: l2\n", True,
           "    mode: always\n"),
    'FAKD': ('FACDModel', 'FAKD spatial-affinity distillation + output KD',
             "  feature_opt:\n    type: FAKDAffinityLoss\n    loss_weight: 10.0  # FAKD: 10*SA with alpha 0.5\n"
             "    max_positions: 1024\n", True,
             "    mode: always\n"),
    'KD': ('FACDModel', 'output KD only (pixel + L1 to the teacher output)', None, True, "    mode: always\n"),
    'Scratch': ('SRModel', 'student from scratch (L1 to the ground truth only)', None, False, None),
    'TeacherInit': ('SRModel', 'student initialised from the teacher where shapes match, then L1 to the ground truth',
                    None, False, None),
}


def net_block(key: str, spec: Dict, scale: int) -> str:
    lines = [f'{key}:', f'  type: {spec["type"]}']
    lines += [f'  {k}: {v}' for k, v in {**spec['head'], **spec['params']}.items()]
    lines.append(f'  {spec["scale_key"]}: {scale}')
    return '\n'.join(lines) + '\n' + spec['tail']


def experiment_name(variant: str, family: str, scale: int) -> str:
    spec = FAMILIES[family]
    return f'{variant}_{family}_x{scale}_{spec["tag_s"]}_from_{spec["tag_t"]}_DIV2K_300k_B16G1'


def datasets_block(scale: int) -> str:
    return f"""datasets:
  train:
    name: DIV2K
    type: PairedImageDataset
    dataroot_gt: datasets/DIV2K/DIV2K_train_HR_sub.lmdb
    dataroot_lq: datasets/DIV2K/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb
    io_backend:
      type: lmdb
    gt_size: {48 * scale}
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 6
    batch_size_per_gpu: 16
    dataset_enlarge_ratio: 100
    prefetch_mode: ~
  val:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: datasets/Set5/GTmod12
    dataroot_lq: datasets/Set5/LRbicx{scale}
    io_backend:
      type: disk
"""


# families whose student distill.init_from_teacher can cut out of the teacher (facd_basicsr/distill/teacher_init.py)
SLICEABLE = ('EDSR', 'RCAN')
# FACD and its two ablations; where the student can be cut out of the teacher they train the best combination the
# x4 confirmation measured (docs/ablation.md 11.3): teacher-slice init, then FACD on centred maps at the last tap
# only, through adapters that start as the leading-channel identity
FACD_VARIANTS = ('FACD', 'FACDAlways', 'FACDLiteral')


def starts_from_teacher(variant: str, family: str) -> bool:
    return family in SLICEABLE and variant in FACD_VARIANTS


def distill_block(variant: str, family: str, gate: str) -> str:
    spec = FAMILIES[family]
    teacher_taps, student_taps = spec['teacher_taps'], spec['student_taps']
    adapter = "  adapter:\n    type: FACDAdapter\n    kind: conv1x1\n"
    if starts_from_teacher(variant, family):
        teacher_taps = student_taps = ['conv_after_body']
        adapter += "    leading_identity: true  # student channel c starts mapped to teacher channel c\n"
        init = "  init_from_teacher: true  # the student starts from slices of the teacher (README, Recipes)\n"
    elif family in SLICEABLE:
        init = "  init_from_teacher: false  # true: the student starts from slices of the teacher (README, Recipes)\n"
    else:
        init = ''
    return (f"distill:\n  teacher_taps: [{', '.join(teacher_taps)}]\n  student_taps: [{', '.join(student_taps)}]\n"
            f"{adapter}  gate:\n{gate}  teacher_check: true\n{init}")


def path_block(variant: str, family: str, scale: int) -> str:
    teacher = f"experiments/pretrained_models/{FAMILIES[family]['teacher_file'](scale)}"
    if variant == 'TeacherInit':
        return (f"path:\n  pretrain_network_g: {teacher}  # the teacher: tensors of matching shape are copied\n"
                "  param_key_g: params\n  strict_load_g: false\n  resume_state: ~\n")
    lines = "path:\n  pretrain_network_g: ~\n  strict_load_g: true\n"
    if VARIANTS[variant][0] == 'FACDModel':
        lines += (f"  pretrain_network_t: {teacher}\n  param_key_t: params\n  strict_load_t: true\n")
    return lines + "  resume_state: ~\n"


def feature_block(variant: str, family: str) -> str:
    """``train.feature_opt`` of the variant, or '' without one; FACD variants say whether the maps are centred."""
    feature = VARIANTS[variant][2] or ''
    if variant in FACD_VARIANTS:
        feature += ("    centre: true  # part of the measured best with teacher init (docs/ablation.md 11.3)\n"
                    if starts_from_teacher(variant, family) else
                    "    centre: false  # true: the best x2 variant (docs/ablation.md 11.2); default until x4 agrees\n")
    return feature


def train_block(variant: str, family: str) -> str:
    _, _, _, kd, _ = VARIANTS[variant]
    feature = feature_block(variant, family)
    pixel_weight = 0.5 if kd else 1.0
    text = f"""train:
  ema_decay: 0
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [200000]
    gamma: 0.5
  total_iter: 300000
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: {pixel_weight}
    reduction: mean
"""
    if kd:
        text += "  kd_opt:\n    type: L1Loss\n    loss_weight: 0.5\n    reduction: mean\n"
    return text + feature


def tail_block(scale: int) -> str:
    return f"""
val:
  val_freq: !!float 5e3
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: {scale}
      test_y_channel: true

logger:
  print_freq: 100
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

dist_params:
  backend: nccl
  port: 29500
"""


def model_type_of(variant: str, family: str) -> str:
    """The variant's model; a family may train its students from scratch with a stock BasicSR model of its own."""
    model_type = VARIANTS[variant][0]
    return FAMILIES[family].get('scratch_model', model_type) if model_type == 'SRModel' else model_type


def test_model_of(family: str) -> str:
    return FAMILIES[family].get('scratch_model', 'SRModel')


def train_file(variant: str, family: str, scale: int) -> str:
    _, title, _, _, gate = VARIANTS[variant]
    model_type = model_type_of(variant, family)
    spec = FAMILIES[family]
    name = experiment_name(variant, family, scale)
    text = (f"# {'-' * 110}\n# {title}\n# {family} x{scale}: student {spec['student']['type']} {spec['tag_s']}, "
            f"teacher {spec['teacher']['type']} {spec['tag_t']} (reference protocol, ../README.md)\n"
            f"# Teacher file: {spec['teacher_source'](scale)}\n"
            f"# Generated by scripts/make_options.py; edit that script, not this file.\n# {'-' * 110}\n"
            f"name: {name}\nmodel_type: {model_type}\nscale: {scale}\n{NUM_GPU}\n"
            f"manual_seed: 10\n\n{datasets_block(scale)}\n# student\n{net_block('network_g', spec['student'], scale)}")
    if model_type == 'FACDModel':
        text += f"\n# teacher (frozen, never saved)\n{net_block('network_t', spec['teacher'], scale)}"
    text += f"\n{path_block(variant, family, scale)}"
    if model_type == 'FACDModel':
        text += f"\n{distill_block(variant, family, gate)}"
    return text + f"\n{train_block(variant, family)}{tail_block(scale)}"


def test_file(variant: str, family: str, scale: int, benchmarks=BENCHMARKS, suffix: str = '') -> str:
    """Test option file of a recipe's student on ``benchmarks``; ``suffix`` is added to the run name."""
    spec = FAMILIES[family]
    name = experiment_name(variant, family, scale)
    sets = ''.join(f"""  test_{i + 1}:
    name: {label}
    type: PairedImageDataset
    dataroot_gt: datasets/{folder}/GTmod12
    dataroot_lq: datasets/{folder}/LRbicx{scale}
    io_backend:
      type: disk
""" for i, (label, folder) in enumerate(benchmarks))
    model_type = test_model_of(family)
    return (f"# Test the student of train {name} (a plain {spec['student']['type']}: stock {model_type} loads it).\n"
            f"# Generated by scripts/make_options.py; edit that script, not this file.\n"
            f"name: {name}{suffix}\nmodel_type: {model_type}\nscale: {scale}\n{NUM_GPU}\n"
            f"manual_seed: 10\n\ndatasets:\n{sets}\n{net_block('network_g', spec['student'], scale)}\n"
            f"path:\n  pretrain_network_g: experiments/{name}/models/net_g_latest.pth\n  param_key_g: params\n"
            f"  strict_load_g: true\n\nval:\n  save_img: true\n  suffix: ~\n  metrics:\n    psnr:\n"
            f"      type: calculate_psnr\n      crop_border: {scale}\n      test_y_channel: true\n    ssim:\n"
            f"      type: calculate_ssim\n      crop_border: {scale}\n      test_y_channel: true\n")


def variants_of(family: str) -> List[str]:
    """TeacherInit only where shapes allow: RCAN students share the teacher's width; EDSR 64 vs 256 does not, nor do
    SwinIR 60 vs 180 and SRVGGNetCompact vs RRDBNet. FACDLiteral and FAKD only for the paper's families."""
    if family not in ('EDSR', 'RCAN'):
        return list(CORE_VARIANTS)
    return [v for v in VARIANTS if v != 'TeacherInit' or family == 'RCAN']


def all_files() -> Dict[str, str]:
    """Relative path -> content of every generated option file."""
    files = {}
    for family, spec in FAMILIES.items():
        for scale in spec.get('scales', SCALES):
            for variant in variants_of(family):
                train_name = f'train_{variant}_{family}_x{scale}.yml'
                folder = '' if variant == 'FACD' else 'baselines'
                files[osp.join(folder, train_name)] = train_file(variant, family, scale)
                test_name = f'test_{variant}_{family}_x{scale}.yml'
                files[osp.join('test', test_name)] = test_file(variant, family, scale)
                manga = test_file(variant, family, scale, OPTIONAL_BENCHMARKS, '_Manga109')
                files[osp.join('test', 'manga109', test_name)] = manga
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='options')
    args = parser.parse_args()
    for rel, text in all_files().items():
        path = osp.join(args.out, rel)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)


if __name__ == '__main__':
    main()
