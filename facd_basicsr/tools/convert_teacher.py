"""Convert official EDSR-PyTorch / RCAN checkpoints into BasicSR ``EDSR`` / ``RCAN`` checkpoints (``{'params': sd}``).

No template checkpoint is needed: blocks, groups, channels, squeeze factor and scale are read from the tensors. Every
source key is either mapped or deliberately ignored (the MeanShift ``sub_mean`` / ``add_mean`` convs, whose values
are checked against BasicSR's ``img_range 255`` / DIV2K ``rgb_mean``), every BasicSR key is filled, and the result is
loaded into the BasicSR network with ``strict=True`` before it is saved; anything else fails naming the keys.

Example:
    facd-convert-teacher RCAN_BIX4.pt experiments/pretrained_models/RCAN_BIX4.pth
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs import build_network

from facd_basicsr.host.checkpoint import CheckpointError, CheckpointWriteError, atomic_torch_save, safe_torch_load
from facd_basicsr.tools.common import check_output_location

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
IMG_RANGE = 255.
MEAN_SHIFT_KEYS = ('sub_mean.weight', 'sub_mean.bias', 'add_mean.weight', 'add_mean.bias')
YAML_ORDER = ('type', 'num_in_ch', 'num_out_ch', 'num_feat', 'num_group', 'num_block', 'squeeze_factor', 'upscale',
              'res_scale', 'img_range', 'rgb_mean')
StateDict = Dict[str, torch.Tensor]


class ConversionError(ValueError):
    """The checkpoint does not have the official EDSR / RCAN layout expected here."""


def load_official(path: str) -> StateDict:
    """Load a raw official state dict (a ``module.`` prefix on every key is removed).

    Read by the package's safe loader (``weights_only=True``): a truncated, corrupt or code-carrying file fails with
    an error naming it, and a pickle is never executed.
    """
    try:
        obj = safe_torch_load(path, 'facd-convert-teacher input', 'official checkpoint')
    except CheckpointError as err:
        raise ConversionError(str(err)) from None
    if not isinstance(obj, dict):
        raise ConversionError(f'{path}: expected a state dict, got {type(obj).__name__}')
    if 'params' in obj or 'params_ema' in obj:
        raise ConversionError(f'{path} is already a BasicSR checkpoint (keys {sorted(obj)}): load it as it is, '
                              'with param_key_t params (or params_ema)')
    not_tensors = sorted(k for k, v in obj.items() if not torch.is_tensor(v))
    if not_tensors:
        raise ConversionError(f'{path}: expected a raw state dict of tensors; non-tensor entries: {not_tensors[:10]}')
    if obj and all(k.startswith('module.') for k in obj):
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    return dict(obj)


def _require(sd: StateDict, key: str) -> torch.Tensor:
    if key not in sd:
        raise ConversionError(f'Missing key {key!r}, needed to infer the network size')
    return sd[key]


def _count(sd: StateDict, pattern: str, what: str) -> int:
    """Number of consecutive indices 0..n-1 matched by ``pattern`` (one ``(\\d+)`` group); fails on gaps."""
    found = sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(pattern, k)] if m})
    if not found or found != list(range(len(found))):
        raise ConversionError(f'{what}: expected indices 0..n-1 for keys like {pattern!r}, found {found}')
    return len(found)


def detect_arch(sd: StateDict) -> str:
    """'rcan' when channel-attention keys (``conv_du``) exist, 'edsr' for plain residual blocks, else fail."""
    if any('.conv_du.' in k for k in sd):
        return 'rcan'
    if 'body.0.body.0.weight' in sd:
        return 'edsr'
    raise ConversionError('Neither the official EDSR layout (body.0.body.0.weight) nor the official RCAN layout '
                          f'(...conv_du...) was found. First keys: {sorted(sd)[:8]}')


def infer_upsampler(sd: StateDict, num_feat: int) -> Tuple[int, List[int]]:
    """Scale and conv indices of the official upsampler ``tail.0``: one 9C conv (x3) or k 4C convs at 0, 2, .. (2^k)."""
    indices = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r'tail\.0\.(\d+)\.weight', k)] if m)
    outs = [sd[f'tail.0.{i}.weight'].shape[0] for i in indices]
    if indices == [0] and outs == [9 * num_feat]:
        return 3, indices
    if indices and indices == list(range(0, 2 * len(indices), 2)) and all(o == 4 * num_feat for o in outs):
        return 2**len(indices), indices
    raise ConversionError(f'Unrecognised upsampler: conv indices {indices} with output channels {outs} for '
                          f'num_feat {num_feat}; expected [0] with {9 * num_feat} (x3) or [0, 2, ..] with '
                          f'{4 * num_feat} each (x2, x4, x8)')


def _common(sd: StateDict) -> dict:
    head = _require(sd, 'head.0.weight')
    num_feat = head.shape[0]
    scale, _ = infer_upsampler(sd, num_feat)
    return dict(
        num_in_ch=head.shape[1], num_out_ch=_require(sd, 'tail.1.weight').shape[0], num_feat=num_feat, upscale=scale)


def _conv(src: str, dst: str) -> Dict[str, str]:
    return {f'{src}.weight': f'{dst}.weight', f'{src}.bias': f'{dst}.bias'}


def _shared_map(net: dict) -> Dict[str, str]:
    """Head, upsampler and last conv: identical in EDSR and RCAN."""
    mapping = _conv('head.0', 'conv_first')
    mapping.update(_conv('tail.1', 'conv_last'))
    scale = net['upscale']
    for i in ([0] if scale == 3 else range(0, 2 * (scale.bit_length() - 1), 2)):
        mapping.update(_conv(f'tail.0.{i}', f'upsample.{i}'))
    return mapping


def edsr_plan(sd: StateDict, res_scale: Optional[float]) -> Tuple[dict, Dict[str, str]]:
    """BasicSR ``EDSR`` options and the official -> BasicSR key map."""
    net = dict(type='EDSR', **_common(sd))
    blocks = _count(sd, r'body\.(\d+)\.body\.0\.weight', 'EDSR residual blocks')
    large = net['num_feat'] == 256 and blocks == 32
    net.update(num_block=blocks, res_scale=(0.1 if large else 1.) if res_scale is None else res_scale)
    mapping = _shared_map(net)
    for b in range(blocks):
        mapping.update(_conv(f'body.{b}.body.0', f'body.{b}.conv1'))
        mapping.update(_conv(f'body.{b}.body.2', f'body.{b}.conv2'))
    mapping.update(_conv(f'body.{blocks}', 'conv_after_body'))
    return net, mapping


def rcan_plan(sd: StateDict, res_scale: Optional[float]) -> Tuple[dict, Dict[str, str]]:
    """BasicSR ``RCAN`` options and the official -> BasicSR key map (official RCAB does not scale its residual)."""
    if res_scale not in (None, 1, 1.):
        raise ConversionError(f'--res-scale {res_scale} does not apply to RCAN: the official RCAB adds its residual '
                              'unscaled, so the converted network must use res_scale 1')
    net = dict(type='RCAN', **_common(sd))
    groups = _count(sd, r'body\.(\d+)\.body\.0\.body\.0\.weight', 'RCAN residual groups')
    blocks = _count(sd, r'body\.0\.body\.(\d+)\.body\.0\.weight', 'RCAN blocks of group 0')
    reduced = _require(sd, 'body.0.body.0.body.3.conv_du.0.weight').shape[0]
    if net['num_feat'] % reduced:
        raise ConversionError(f'Channel attention squeezes {net["num_feat"]} channels to {reduced}: not a divisor')
    net.update(num_group=groups, num_block=blocks, squeeze_factor=net['num_feat'] // reduced, res_scale=1)
    mapping = _shared_map(net)
    for g in range(groups):
        for b in range(blocks):
            src, dst = f'body.{g}.body.{b}.body', f'body.{g}.residual_group.{b}.rcab'
            mapping.update(_conv(f'{src}.0', f'{dst}.0'))
            mapping.update(_conv(f'{src}.2', f'{dst}.2'))
            mapping.update(_conv(f'{src}.3.conv_du.0', f'{dst}.3.attention.1'))
            mapping.update(_conv(f'{src}.3.conv_du.2', f'{dst}.3.attention.3'))
        mapping.update(_conv(f'body.{g}.body.{blocks}', f'body.{g}.conv'))
    mapping.update(_conv(f'body.{groups}', 'conv_after_body'))
    return net, mapping


def check_mean_shift(sd: StateDict) -> List[str]:
    """Problems with the MeanShift convs (empty when they match rgb_range 255 and the DIV2K mean, or are absent)."""
    present = [k for k in MEAN_SHIFT_KEYS if k in sd]
    if not present:
        return []
    if len(present) != len(MEAN_SHIFT_KEYS):
        return [f'incomplete MeanShift keys: found {present}, expected {list(MEAN_SHIFT_KEYS)}']
    problems = []
    eye = torch.eye(3).view(3, 3, 1, 1)
    expected = IMG_RANGE * torch.tensor(DIV2K_MEAN)
    for name, sign in (('sub_mean', -1), ('add_mean', 1)):
        weight, bias = sd[f'{name}.weight'].float(), sd[f'{name}.bias'].float()
        if weight.shape != eye.shape or not torch.allclose(weight, eye, atol=1e-5):
            problems.append(f'{name}.weight is not the identity (rgb_std != 1, which BasicSR EDSR/RCAN cannot express)')
        elif bias.shape != (3, ) or not torch.allclose(bias, sign * expected, atol=1e-2):
            problems.append(f'{name}.bias = {[round(v, 4) for v in bias.tolist()]}, expected '
                            f'{[round(v, 4) for v in (sign * expected).tolist()]} (rgb_range 255 x mean {DIV2K_MEAN})')
    return problems


def convert_state_dict(sd: StateDict,
                       arch: str = 'auto',
                       res_scale: Optional[float] = None,
                       check_mean: bool = True) -> Tuple[StateDict, dict, List[str]]:
    """Official state dict -> (BasicSR params, ``network_t`` options, warnings).

    Raises:
        ConversionError: unknown or missing keys, shape mismatches, an unknown layout, or (with ``check_mean``)
            MeanShift values that do not match ``img_range 255`` and ``rgb_mean`` (0.4488, 0.4371, 0.4040).
    """
    arch = detect_arch(sd) if arch == 'auto' else arch
    if arch not in ('edsr', 'rcan'):
        raise ConversionError(f'arch {arch!r} is not supported. Supported: auto, edsr, rcan')
    net, mapping = (edsr_plan if arch == 'edsr' else rcan_plan)(sd, res_scale)
    net.update(img_range=IMG_RANGE, rgb_mean=list(DIV2K_MEAN))
    warnings = check_mean_shift(sd)
    if warnings and check_mean:
        raise ConversionError('MeanShift check failed: ' + '; '.join(warnings) + '. Pass --no-mean-check to convert '
                              'anyway and set img_range / rgb_mean in network_t yourself')
    unknown = sorted(set(sd) - set(mapping) - set(MEAN_SHIFT_KEYS))
    missing = sorted(set(mapping) - set(sd))
    if unknown or missing:
        raise ConversionError(f'Official {arch.upper()} layout mismatch: unknown source keys {unknown}; '
                              f'missing source keys {missing}')
    return _fill_target(sd, mapping, net), net, warnings


def _fill_target(sd: StateDict, mapping: Dict[str, str], net: dict) -> StateDict:
    """Build the BasicSR network, check every target key and shape, load with strict=True; its state dict back."""
    model = build_network(dict(net))
    target = model.state_dict()
    produced = {dst: src for src, dst in mapping.items()}
    unfilled = sorted(set(target) - set(produced))
    extra = sorted(set(produced) - set(target))
    if unfilled or extra:
        raise ConversionError(f'BasicSR {net["type"]} keys not filled: {unfilled}; produced keys it lacks: {extra}')
    bad = [
        f'{produced[k]} {tuple(sd[produced[k]].shape)} -> {k} {tuple(t.shape)}' for k, t in target.items()
        if sd[produced[k]].shape != t.shape
    ]
    if bad:
        raise ConversionError('Shape mismatches: ' + '; '.join(bad[:10]))
    params = {k: sd[produced[k]].detach().clone().float().contiguous() for k in target}
    model.load_state_dict(params, strict=True)
    return params


def network_yaml(net: dict, output: str) -> str:
    """The ``network_t`` and ``path`` YAML blocks that load the converted file."""
    order = [k for k in YAML_ORDER if k in net] + [k for k in net if k not in YAML_ORDER]
    lines = ['network_t:'] + [f'  {k}: {_yaml_value(net[k])}' for k in order]
    lines += ['', 'path:', f'  pretrain_network_t: {output}', '  param_key_t: params', '  strict_load_t: true']
    return '\n'.join(lines)


def _yaml_value(value) -> str:
    if isinstance(value, list):
        return '[' + ', '.join(f'{v:.4f}' for v in value) + ']'
    if isinstance(value, float):
        return f'{value:g}' + ('.' if float(value).is_integer() else '')
    return str(value)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='facd-convert-teacher', description=__doc__.split('\n')[0])
    parser.add_argument('input', help='official EDSR-PyTorch (edsr_x4-*.pt) or RCAN (RCAN_BIX4.pt) state dict')
    parser.add_argument('output', nargs='?', help='output .pth (default: the input path with .pth)')
    parser.add_argument(
        '-o', '--output-file', dest='output_opt', metavar='OUTPUT', help='same as the positional OUTPUT')
    parser.add_argument('--arch', default='auto', choices=('auto', 'edsr', 'rcan'), help='default: from the keys')
    parser.add_argument(
        '--res-scale',
        type=float,
        default=None,
        help='EDSR residual scale (not stored in the weights). Default: 0.1 for 32 blocks x 256 ch '
        '(official EDSR), else 1 (EDSR-baseline)')
    parser.add_argument('--scale', type=int, default=None, help='fail unless the upsampler has this scale')
    parser.add_argument('--no-mean-check', action='store_true', help='warn instead of failing on MeanShift values')
    parser.add_argument('--force', action='store_true', help='overwrite an existing output file')
    return parser.parse_args(argv)


def _output_path(args: argparse.Namespace) -> str:
    if args.output and args.output_opt and args.output != args.output_opt:
        raise ConversionError(f'Two different outputs given: {args.output} and -o {args.output_opt}')
    output = args.output or args.output_opt or osp.splitext(args.input)[0] + '.pth'
    if osp.abspath(output) == osp.abspath(args.input):
        raise ConversionError(f'Output {output} would overwrite the input: pass -o')
    if osp.exists(output) and not args.force:
        raise ConversionError(f'Output {output} exists: pass --force to overwrite it')
    try:
        check_output_location('-o' if args.output_opt else 'OUTPUT', output, 'file')
    except ValueError as err:
        raise ConversionError(str(err)) from None
    return output


def _check_scale(args: argparse.Namespace, scale: int) -> None:
    if args.scale is not None and args.scale != scale:
        raise ConversionError(f'--scale {args.scale} given, but the upsampler of {args.input} is x{scale}')
    named = re.search(r'(?:BIX|_x)(\d)', osp.basename(args.input))
    if named and int(named.group(1)) != scale:
        print(f'warning: the file name says x{named.group(1)} but the upsampler is x{scale}', file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-convert-teacher``; returns the exit status (0 ok, 2 conversion error)."""
    args = parse_args(argv)
    try:
        output = _output_path(args)
        params, net, warnings = convert_state_dict(
            load_official(args.input), args.arch, args.res_scale, check_mean=not args.no_mean_check)
        _check_scale(args, net['upscale'])
    except (ConversionError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for warning in warnings:
        print(f'warning: {warning}', file=sys.stderr)
    os.makedirs(osp.dirname(osp.abspath(output)), exist_ok=True)
    try:
        atomic_torch_save({'params': params}, output, 'converted teacher')
    except CheckpointWriteError as err:
        print(f'error: {err.strerror}', file=sys.stderr)
        return 2
    print(f'Converted {args.input} ({len(params)} tensors, official {net["type"]} layout, x{net["upscale"]}) '
          f'-> {output}')
    if net['type'] == 'EDSR':
        print(f'res_scale {net["res_scale"]:g}: not stored in the weights; official EDSR (32 x 256) uses 0.1, '
              'EDSR-baseline 1. Override with --res-scale.')
    print('\n' + network_yaml(net, output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
