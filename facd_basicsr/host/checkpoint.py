"""The package's one checkpoint reader and writer: safe loading, strict state dicts, atomic saves, a fingerprint.

* :func:`safe_torch_load` is the only ``torch.load`` of the package: always ``weights_only=True`` (a pickle that
  would run code is refused, never executed), and every failure (missing, truncated, random bytes, a zip that is not
  a torch file, a refused global) is one :class:`CheckpointError` naming the file and the option that named it.
* :func:`read_state_dict` / :func:`load_strictly`: BasicSR's ``load_network`` silently falls back from a missing
  param key to ``params``; for the teacher a wrong key means a wrong teacher, so here every mismatch is an error
  naming the option and the keys.
* :func:`atomic_torch_save`: a temporary file, fsync, ``os.replace``: a killed run or a full disk never leaves a
  half-written file under the final name (BasicSR's ``save_network`` writes in place and ignores write errors).
* safetensors files (traiNNer-redux's and HuggingFace's format, and ``facd-export --format safetensors``) are read by
  :func:`read_safetensors` (no pickle at all) and go through :func:`read_state_dict` with the same checks as ``.pth``
  files; such a file is a bare state dict, so its param key must be None (``param_key_t: ~``).
"""
import collections
import contextlib
import hashlib
import io
import os
import os.path as osp
import warnings
import zipfile
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch import nn

# Globals a BasicSR training state holds besides tensors and builtins: MultiStepLR's milestones are a Counter
# (allowed by default since torch 2.5; listed for older versions).
STATE_SAFE_GLOBALS = (collections.Counter, )
SAFETENSORS_SUFFIX = '.safetensors'


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely (corrupt, truncated, not a torch file, or code in a pickle)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, file-size limit ...); the final name was not touched."""


def _reason(path: str, err: Exception) -> str:
    """A one-line reason why ``torch.load(path)`` failed, from the file's first bytes and torch's message."""
    text = str(err)
    first = (text.splitlines() or [type(err).__name__])[0]
    if 'Unsupported global' in text:
        detail = next(line.strip() for line in text.splitlines() if 'Unsupported global' in line).split('. ')[0]
        return (f'it holds a pickled object that is not plain weights ({detail}); it was refused, not unpickled '
                '(weights_only=True). Do not trust this file')
    with open(path, 'rb') as f:
        magic = f.read(4)
    if not magic:
        return 'the file is empty'
    if is_safetensors(path):
        return 'it is a safetensors file, and this option reads torch checkpoints (.pth) only'
    if magic.startswith(b'PK'):
        if not zipfile.is_zipfile(path):
            return f'a zip archive that is cut short or corrupt (truncated or half-written?): {first}'
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith('data.pkl') for name in archive.namelist()):
                return 'a zip archive but not a torch checkpoint (no data.pkl inside)'
    if 'WeightsUnpickler error' in text:
        detail = text.split('WeightsUnpickler error:', 1)[1].strip().splitlines()[0]
        return (f'the weights-only unpickler refused it ({detail}): random bytes, another format or a pickle that is '
                'not plain weights; nothing in it was executed')
    return f'not a readable torch checkpoint (truncated, corrupt or another format): {type(err).__name__}: {first}'


def safe_torch_load(path: str, option: str, what: str = 'checkpoint', safe_globals: Iterable[type] = (),
                    map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one error naming ``path`` and ``option``.

    Args:
        path (str): the file.
        option (str): the option or argument that named it, for messages, e.g. ``'path.pretrain_network_t'``.
        what (str): what the file is, for messages, e.g. ``'teacher checkpoint'``.
        safe_globals (iterable of type): extra classes the file may hold (e.g. :data:`STATE_SAFE_GLOBALS`).
        map_location: as ``torch.load``. Default: the CPU.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: it cannot be loaded with ``weights_only=True`` (the pickle is never executed).
    """
    if not path or not osp.isfile(path):
        raise FileNotFoundError(f'{option}: {what} {path!r} does not exist')
    scope = torch.serialization.safe_globals(list(safe_globals)) if safe_globals else contextlib.nullcontext()
    try:
        with scope, warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: B902  (torch raises RuntimeError, OSError, EOFError, UnpicklingError ...)
        raise CheckpointError(f'{option}: cannot load the {what} {path}: {_reason(path, err)}') from None


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is (or claims to be) a safetensors file: its suffix, or its first bytes.

    A safetensors file starts with the length of its JSON header (8 bytes, little-endian) and then ``{``; a torch
    checkpoint starts with ``PK`` (zip) or a pickle opcode, which never pass this test.
    """
    if path.lower().endswith(SAFETENSORS_SUFFIX):
        return True
    with open(path, 'rb') as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b'{' and int.from_bytes(head[:8], 'little') <= osp.getsize(path) - 8


def read_safetensors(path: str, option: str,
                     what: str = 'checkpoint') -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and the metadata (``{}`` when none) of the safetensors file ``path``, on the CPU.

    The format holds no code (a JSON header and raw tensor bytes), so nothing can be executed; a truncated or corrupt
    file, or a missing ``safetensors`` package, is one :class:`CheckpointError` naming ``path`` and ``option``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: it cannot be read as safetensors.
    """
    if not path or not osp.isfile(path):
        raise FileNotFoundError(f'{option}: {what} {path!r} does not exist')
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(f'{option}: {path} is a safetensors file and the package safetensors is not installed '
                              '(pip install safetensors)') from None
    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # noqa: B902  (SafetensorError, OSError, a dtype torch lacks ...)
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f'{option}: cannot load the {what} {path}: not a readable safetensors file (truncated, '
                              f'corrupt or another format): {detail}') from None


def load_weights_file(path: str, option: str, what: str = 'checkpoint') -> Any:
    """A safetensors file's tensors (a dict), or else :func:`safe_torch_load` of the file; errors as those two."""
    if osp.isfile(path) and is_safetensors(path):
        return read_safetensors(path, option, what)[0]
    return safe_torch_load(path, option, what)


def read_state_dict(path: str, param_key: Optional[str], option: str) -> Dict[str, torch.Tensor]:
    """The state dict stored under ``param_key`` in the checkpoint ``path`` (``param_key`` None: the file itself).

    A safetensors file (found by :func:`is_safetensors`) is read by :func:`read_safetensors`; it is always a bare
    state dict, so ``param_key`` must be None.

    Args:
        path (str): checkpoint file (``.pth`` written by ``torch.save``, or safetensors).
        param_key (str | None): e.g. 'params' or 'params_ema'.
        option (str): the option that named the file, for messages, e.g. 'path.pretrain_network_t'.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`safe_torch_load`; also a file whose top level, or whose
            ``param_key`` entry, is not a dict of tensors.
        KeyError: ``param_key`` is not in the file, or is not None for a safetensors file.
    """
    if osp.isfile(path) and is_safetensors(path):
        if param_key is not None:
            raise KeyError(f'{option}: {path} is a safetensors file, a bare state dict without param keys (asked for '
                           f'{param_key!r}); set path.param_key_t: ~ (tools: --param-key none)')
        ckpt = read_safetensors(path, option)[0]
    else:
        ckpt = safe_torch_load(path, option)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{option}: {path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    if param_key is not None:
        if param_key not in ckpt:
            raise KeyError(f'{option}: {path} has no param key {param_key!r} (top-level keys: {list(ckpt)[:8]}); '
                           'set path.param_key_t, or use ~ for a bare state dict')
        ckpt = ckpt[param_key]
    bad = [k for k, v in ckpt.items() if not torch.is_tensor(v)] if isinstance(ckpt, dict) else None
    if bad is None or bad:
        found = type(ckpt).__name__ if bad is None else f'non-tensor entries {bad[:5]}'
        raise CheckpointError(f'{option}: {path} [{param_key}] is not a state dict of tensors ({found})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in ckpt.items()}


def atomic_torch_save(obj: Any, path: str, what: str = 'checkpoint') -> None:
    """``torch.save(obj, path)`` through ``path + '.tmp'``, fsync and ``os.replace``.

    Raises:
        CheckpointWriteError: the write failed (e.g. ``ENOSPC``, ``EFBIG``); the temporary file is removed and
            ``path`` (a previous version, if any) is left as it was.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(buffer.getbuffer(), path, what)


def atomic_safetensors_save(state: Dict[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None,
                            what: str = 'weights file') -> None:
    """``state`` (CPU copies, contiguous) and ``metadata`` (str -> str) as a safetensors file, written atomically.

    Raises:
        CheckpointWriteError: as :func:`atomic_torch_save`.
    """
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    _atomic_write(save(tensors, metadata=metadata), path, what)


def _atomic_write(data: Any, path: str, what: str) -> None:
    """Write the bytes ``data`` to ``path`` through ``path + '.tmp'``, fsync and ``os.replace``."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise CheckpointWriteError(err.errno, f'could not write the {what} {path}: {err.strerror or err} (disk full '
                                   f'or a file-size limit?); {path} was not written or changed') from None


def load_strictly(net: nn.Module, state: Dict[str, torch.Tensor], strict: bool, option: str) -> None:
    """Load ``state`` into ``net``; any missing, unexpected (``strict``) or mis-shaped key raises ValueError."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append('shape mismatches: ' + '; '.join(shapes[:5]))
    if strict and missing:
        problems.append(f'{len(missing)} missing keys, e.g. {missing[:5]}')
    if strict and unexpected:
        problems.append(f'{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}')
    if problems:
        raise ValueError(f'{option}: the checkpoint does not fit the network: ' + ' | '.join(problems))
    net.load_state_dict(state, strict=strict)


def fingerprint(net: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of every tensor in ``net.state_dict()`` (a weights identity)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype}'.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def network_state(net: nn.Module) -> Dict[str, torch.Tensor]:
    """``net.state_dict()`` on the CPU without a ``module.`` prefix, as BasicSR's ``save_network`` stores it: the same
    OrderedDict (its ``_metadata`` included), so the saved file holds the same records as BasicSR's."""
    state = net.state_dict()
    for key, value in list(state.items()):
        if key.startswith('module.'):
            del state[key]
            key = key[len('module.'):]
        state[key] = value.cpu()
    return state
