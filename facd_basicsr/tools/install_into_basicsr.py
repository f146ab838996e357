"""``facd-install CHECKOUT [--copy] [--no-patch] [--uninstall]``: make a BasicSR checkout run FACD with its own scripts.

Writes into the checkout (user guide: docs/install_into_basicsr.md):

* ``basicsr/models/facd_plugin_model.py``, a shim imported by BasicSR's model scan (the last registry scanned, so the
  arch/loss/data registries are complete); it imports ``facd_basicsr`` or fails with one message saying what to run;
* our ``options/**/*.yml`` into ``options/{train,test}/FACD/`` (by name prefix, else by a top-level ``train:`` key);
* with ``--copy``, the ``facd_basicsr/`` folder at the checkout root (importable with ``PYTHONPATH=.``);
* on v1.4.2, the one-line torchvision fix of ``basicsr/data/degradations.py`` (``--no-patch``: print it instead).

``.facd_basicsr_install.json`` records every written file's SHA-256 and the patch. Re-running changes nothing;
``--uninstall`` removes what is recorded and restores the patched bytes. Any conflict (a file it did not write, or one
edited since) stops the run before anything is touched, with exit code 1. Standard library only: it runs where torch
and basicsr are not importable.

Examples:
  facd-install ~/BasicSR                 # facd_basicsr is pip-installed in the checkout's environment
  python scripts/install_into_basicsr.py ~/BasicSR --copy    # nothing pip-installed: copy the package in
  cd ~/BasicSR && PYTHONPATH=. python basicsr/train.py -opt options/train/FACD/train_FACD_tiny_x2.yml
  facd-install ~/BasicSR --uninstall     # back to the checkout's original bytes
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

MANIFEST = '.facd_basicsr_install.json'
SHIM = 'basicsr/models/facd_plugin_model.py'
DEGRADATIONS = 'basicsr/data/degradations.py'
OLD_IMPORT = b'from torchvision.transforms.functional_tensor import rgb_to_grayscale'
NEW_IMPORT = b'from torchvision.transforms.functional import rgb_to_grayscale'
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))  # .../facd_basicsr
REPO_ROOT = osp.dirname(PACKAGE_DIR)
SKIP_DIRS = ('__pycache__', )
SKIP_SUFFIXES = ('.pyc', '.pyo')

SHIM_TEMPLATE = '''\
"""FACD plugin shim, written by facd_basicsr's installer (facd-install); its ``--uninstall`` removes it.

BasicSR imports every ``*_model.py`` of this folder; importing ``facd_basicsr`` here registers the FACD networks,
losses and models for ``PYTHONPATH=. python basicsr/train.py -opt options/train/FACD/<file>.yml``.
"""
import importlib.util
import os.path as osp

_PIP = {pip!r}  # noqa: E501
_INSTALLER = {installer!r}  # noqa: E501

if importlib.util.find_spec('facd_basicsr') is None:
    _root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if osp.isfile(osp.join(_root, 'facd_basicsr', '__init__.py')):
        _fix = f'  - run from the checkout root with PYTHONPATH=. so that its copy {{_root}}/facd_basicsr is found\\n'
    else:
        _fix = (f'  - install it into this Python: {{_PIP}}\\n'
                f'  - or copy it into this checkout: {{_INSTALLER}} --copy  (then run with PYTHONPATH=. from {{_root}})\\n')
    raise ImportError('The package facd_basicsr is not importable, so BasicSR cannot register the FACD models '
                      f'(basicsr/models/facd_plugin_model.py). Do one of:\\n{{_fix}}'
                      f'  - or remove this shim: {{_INSTALLER}} --uninstall')

import facd_basicsr  # noqa: E402,F401
'''


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str) -> Optional[bytes]:
    """The bytes of ``path``, or None when it is not a file."""
    if not osp.isfile(path):
        return None
    with open(path, 'rb') as f:
        return f.read()


def shim_source(checkout: str) -> bytes:
    """The shim for ``checkout`` (absolute path); its error message names the commands to run."""
    script = osp.join(REPO_ROOT, 'scripts', 'install_into_basicsr.py')
    from_source = osp.isfile(script) and osp.isfile(osp.join(REPO_ROOT, 'setup.py'))
    pip = f'pip install --no-build-isolation --no-deps -e {REPO_ROOT}' if from_source else 'pip install facd_basicsr'
    installer = f'python {script} {checkout}' if from_source else f'facd-install {checkout}'
    return SHIM_TEMPLATE.format(pip=pip, installer=installer).encode('utf-8')


def option_kind(path: str) -> str:
    """``'train'`` or ``'test'`` for a BasicSR option file: by its name prefix, else by a top-level ``train:`` key."""
    name = osp.basename(path)
    for kind in ('train', 'test'):
        if name.startswith(kind):
            return kind
    with open(path, encoding='utf-8') as f:
        return 'train' if any(line.startswith('train:') for line in f) else 'test'


def option_files(options_dir: str) -> Dict[str, bytes]:
    """Map every ``*.yml`` under ``options_dir`` (recursive) to ``options/{train,test}/FACD/<file name>``; a file two
    folders down keeps its inner folder (``options/test/manga109/x.yml`` -> ``options/test/FACD/manga109/x.yml``).

    Raises:
        ValueError: when two files of different folders would land on the same checkout path.
    """
    out, origin = {}, {}
    for folder, dirs, files in os.walk(options_dir):
        dirs.sort()
        for name in sorted(n for n in files if n.endswith('.yml')):
            src = osp.join(folder, name)
            inner = osp.relpath(folder, options_dir).split(os.sep)[1:]
            rel = '/'.join(['options', option_kind(src), 'FACD', *inner, name])
            if rel in out:
                raise ValueError(f'Option files {origin[rel]} and {src} would both be installed as {rel}; '
                                 'rename one of them.')
            out[rel], origin[rel] = read_bytes(src), src
    return out


def package_files(package_dir: str = PACKAGE_DIR) -> Dict[str, bytes]:
    """Every file of the ``facd_basicsr`` folder (no caches) keyed by its checkout path ``facd_basicsr/...``."""
    out = {}
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith('.egg-info'))
        for name in sorted(n for n in files if not n.endswith(SKIP_SUFFIXES)):
            src = osp.join(folder, name)
            rel = osp.relpath(src, osp.dirname(package_dir)).replace(os.sep, '/')
            out[rel] = read_bytes(src)
    return out


def desired_files(checkout: str, copy: bool, options_dir: str) -> Dict[str, bytes]:
    """Everything the installer should have written into ``checkout``: checkout path -> bytes."""
    files = {SHIM: shim_source(checkout)}
    if osp.isdir(options_dir):
        files.update(option_files(options_dir))
    else:
        print(f'Note: no option folder at {options_dir}; no option files installed.')
    if copy:
        files.update(package_files())
    return files


def check_checkout(checkout: str) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` unless ``checkout`` looks like a BasicSR source checkout."""
    if not osp.isfile(osp.join(checkout, 'basicsr', 'models', '__init__.py')):
        raise FileNotFoundError(f'{checkout} is not a BasicSR checkout: basicsr/models/__init__.py is missing.')
    if osp.basename(checkout) in ('site-packages', 'dist-packages'):
        raise ValueError(f'{checkout} is an installed Python environment, not a BasicSR checkout.')
    if not osp.isfile(osp.join(checkout, 'basicsr', 'version.py')):
        print('Note: basicsr/version.py is missing; BasicSR generates it with `python setup.py develop` (or '
              '`pip install -e .`) in the checkout, and basicsr/train.py cannot start without it.')


def safe_rel(rel: str) -> str:
    """Reject manifest paths that are absolute or climb out of the checkout."""
    if osp.isabs(rel) or '..' in rel.split('/'):
        raise ValueError(f'Refusing manifest path {rel!r}: it points outside the checkout.')
    return rel


def load_manifest(checkout: str) -> Optional[dict]:
    data = read_bytes(osp.join(checkout, MANIFEST))
    if data is None:
        return None
    try:
        manifest = json.loads(data.decode('utf-8'))
    except ValueError as err:
        raise ValueError(f'{osp.join(checkout, MANIFEST)} is not the JSON this installer writes: {err}') from None
    for rel in [*manifest.get('files', {}), *manifest.get('dirs', []), *manifest.get('patches', {})]:
        safe_rel(rel)
    return manifest


def patch_bytes(data: bytes, rec: dict, undo: bool = False) -> bytes:
    """Apply (or undo) the recorded one-line replacement at its byte offset."""
    old, new = rec['old'].encode('utf-8'), rec['new'].encode('utf-8')
    if undo:
        old, new = new, old
    offset = rec['offset']
    if data[offset:offset + len(old)] != old:
        raise ValueError(f'{DEGRADATIONS}: expected {old!r} at byte {offset}.')
    return data[:offset] + new + data[offset + len(old):]


def no_patch_help(checkout: str) -> str:
    return (f'Not patched (--no-patch): {DEGRADATIONS} imports torchvision.transforms.functional_tensor, which '
            'torchvision >= 0.17 removed, so basicsr/train.py fails there before it reaches the FACD shim. '
            'Apply the one-line fix yourself:\n'
            f"  sed -i 's/transforms\\.functional_tensor import/transforms.functional import/' "
            f'{osp.join(checkout, DEGRADATIONS)}\n'
            'or run the installer again without --no-patch (it records the fix; --uninstall reverts it).')


def plan_files(checkout: str, desired: Dict[str, bytes], recorded: Dict[str, str]) -> tuple:
    """Compare the checkout with the wanted files and the manifest.

    Returns:
        tuple: (writes: {path: bytes}, removes: [path], problems: [message]); nothing is changed here.
    """
    writes, removes, problems = {}, [], []
    for rel, data in desired.items():
        path = osp.join(checkout, rel)
        cur = read_bytes(path)
        if osp.lexists(path) and cur is None:
            problems.append(f'{rel} exists and is not a regular file.')
        elif cur is not None and rel in recorded and sha256(cur) != recorded[rel]:
            problems.append(f'{rel} was modified since the installer wrote it.')
        elif cur is not None and rel not in recorded:
            problems.append(f'{rel} already exists and was not written by this installer.')
        elif cur != data:
            writes[rel] = data
    for rel, digest in sorted(recorded.items()):
        cur = read_bytes(osp.join(checkout, rel))
        if rel in desired or cur is None:
            continue
        if sha256(cur) != digest:
            problems.append(f'{rel} was modified since the installer wrote it.')
        else:
            removes.append(rel)
    return writes, removes, problems


def plan_patch(checkout: str, rec: Optional[dict], want: bool, uninstall: bool) -> tuple:
    """Decide what to do with the torchvision fix of ``basicsr/data/degradations.py``.

    Returns:
        tuple: (bytes to write or None, record to keep in the manifest or None, problems).
    """
    data = read_bytes(osp.join(checkout, DEGRADATIONS))
    if not want and not uninstall and data is not None and (OLD_IMPORT in data or rec is not None):
        print(no_patch_help(checkout))
    if rec is not None:
        digest = None if data is None else sha256(data)
        if digest == rec['patched_sha256']:
            if want:
                return None, rec, []
            restored = patch_bytes(data, rec, undo=True)
            if sha256(restored) != rec['original_sha256']:
                return None, rec, [f'{DEGRADATIONS}: undoing the patch does not give the original bytes back.']
            return restored, None, []
        if digest is not None and digest != rec['original_sha256'] and uninstall:
            return None, rec, [f'{DEGRADATIONS} was modified since the installer patched it; undo your edits, or '
                               f'delete its "patches" entry from {MANIFEST} to leave the file as it is.']
    if data is None or OLD_IMPORT not in data:
        return None, None, []
    if not want:
        return None, None, []
    offset = data.index(OLD_IMPORT)
    rec = {'offset': offset, 'old': OLD_IMPORT.decode(), 'new': NEW_IMPORT.decode(), 'original_sha256': sha256(data)}
    patched = patch_bytes(data, rec)
    rec['patched_sha256'] = sha256(patched)
    return patched, rec, []


def write_file(checkout: str, rel: str, data: bytes, created_dirs: List[str]) -> None:
    """Write ``data`` to ``checkout/rel``, recording every folder this creates."""
    parts = rel.split('/')[:-1]
    for i in range(1, len(parts) + 1):
        folder = '/'.join(parts[:i])
        if not osp.isdir(osp.join(checkout, folder)):
            os.mkdir(osp.join(checkout, folder))
            created_dirs.append(folder)
    with open(osp.join(checkout, rel), 'wb') as f:
        f.write(data)


def remove_file(checkout: str, rel: str) -> None:
    """Delete ``checkout/rel`` and the bytecode Python cached for it."""
    path = osp.join(checkout, rel)
    os.remove(path)
    cache = osp.join(osp.dirname(path), '__pycache__')
    stem = osp.splitext(osp.basename(path))[0] + '.'
    if rel.endswith('.py') and osp.isdir(cache):
        for name in os.listdir(cache):
            if name.startswith(stem) and name.endswith(SKIP_SUFFIXES):
                os.remove(osp.join(cache, name))


def prune_dirs(checkout: str, dirs: List[str]) -> List[str]:
    """Remove the recorded folders that are now empty (an empty ``__pycache__`` inside counts as empty).

    Returns:
        list: the recorded folders still present.
    """
    kept = []
    for rel in sorted(set(dirs), key=lambda d: (-d.count('/'), d)):
        path = osp.join(checkout, rel)
        cache = osp.join(path, '__pycache__')
        if osp.isdir(cache) and not os.listdir(cache):
            os.rmdir(cache)
        if osp.isdir(path) and not os.listdir(path):
            os.rmdir(path)
        elif osp.isdir(path):
            kept.append(rel)
    return sorted(kept)


def describe(paths: List[str]) -> str:
    """Short listing: the package copy is summarised as one entry."""
    copied = [p for p in paths if p.startswith('facd_basicsr/')]
    rest = [p for p in paths if not p.startswith('facd_basicsr/')]
    return ', '.join(rest + ([f'facd_basicsr/ ({len(copied)} files)'] if copied else []))


def sync(checkout: str, manifest: Optional[dict], desired: Dict[str, bytes], want_patch: bool, uninstall: bool,
         mode: str) -> int:
    """Bring the checkout to ``desired`` (+ the patch when ``want_patch``); all-or-nothing. Returns the exit code."""
    manifest = manifest or {}
    rec = manifest.get('patches', {}).get(DEGRADATIONS)
    writes, removes, problems = plan_files(checkout, desired, manifest.get('files', {}))
    patched, rec, patch_problems = plan_patch(checkout, rec, want_patch, uninstall)
    problems += patch_problems
    if problems:
        print(f'Refusing to change {checkout}; nothing was touched:', *[f'  - {p}' for p in problems], sep='\n',
              file=sys.stderr)
        return 1
    dirs = list(manifest.get('dirs', []))
    new_manifest = {
        'written_by': 'facd_basicsr installer (facd-install)', 'format': 1, 'mode': mode,
        'files': {rel: sha256(data) for rel, data in sorted(desired.items())},
        'patches': {DEGRADATIONS: rec} if rec else {}}
    old_bytes = read_bytes(osp.join(checkout, MANIFEST))
    if not (uninstall or writes or removes or patched) and old_bytes == manifest_bytes(new_manifest, dirs):
        print(f'Already installed in {checkout}; nothing changed.')
        return 0
    for rel, data in sorted(writes.items()):
        write_file(checkout, rel, data, dirs)
    for rel in removes:
        remove_file(checkout, rel)
    if patched is not None:
        with open(osp.join(checkout, DEGRADATIONS), 'wb') as f:
            f.write(patched)
    dirs = prune_dirs(checkout, dirs)
    report(writes, removes, patched, rec)
    if uninstall and dirs:
        print('Kept folders that hold files the installer did not write:', ', '.join(dirs))
    if uninstall:
        os.remove(osp.join(checkout, MANIFEST))
        print(f'Removed {MANIFEST}.')
    else:
        with open(osp.join(checkout, MANIFEST), 'wb') as f:
            f.write(manifest_bytes(new_manifest, dirs))
    return 0


def manifest_bytes(manifest: dict, dirs: List[str]) -> bytes:
    return (json.dumps({**manifest, 'dirs': sorted(set(dirs))}, indent=2, sort_keys=True) + '\n').encode('utf-8')


def report(writes: Dict[str, bytes], removes: List[str], patched: Optional[bytes], rec: Optional[dict]) -> None:
    if writes:
        print(f'Wrote {describe(sorted(writes))}')
    if removes:
        print(f'Removed {describe(removes)}')
    if patched is not None and rec is not None:
        print(f'Patched {DEGRADATIONS}: {rec["old"]!r} -> {rec["new"]!r} (recorded; --uninstall reverts it)')
    elif patched is not None:
        print(f'Restored the original {DEGRADATIONS}')


def next_steps(checkout: str) -> str:
    return (f'Run FACD with BasicSR\'s own scripts from the checkout root (cd {checkout}):\n'
            '  PYTHONPATH=. python basicsr/train.py -opt options/train/FACD/<file>.yml\n'
            '  PYTHONPATH=. python basicsr/test.py -opt options/test/FACD/<file>.yml\n'
            f'Undo with the same command plus --uninstall.')


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-install', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkout', help='root of the BasicSR checkout (the folder holding basicsr/)')
    parser.add_argument('--copy', action='store_true',
                        help='also copy the facd_basicsr/ package into the checkout root (no pip install needed; '
                        'run with PYTHONPATH=.)')
    parser.add_argument('--no-patch', action='store_true',
                        help='do not apply the torchvision functional_tensor fix to a v1.4.2 checkout; print it')
    parser.add_argument('--uninstall', action='store_true',
                        help='remove everything the installer recorded and restore the patched file')
    parser.add_argument('--options-dir', default=osp.join(REPO_ROOT, 'options'),
                        help='folder whose *.yml files are installed (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    checkout = osp.abspath(args.checkout)
    try:
        check_checkout(checkout)
        manifest = load_manifest(checkout)
        if args.uninstall:
            if manifest is None:
                print(f'No {MANIFEST} in {checkout}: nothing was installed there by this tool, so nothing is removed.',
                      file=sys.stderr)
                return 1
            return sync(checkout, manifest, {}, False, True, manifest.get('mode', 'package'))
        desired = desired_files(checkout, args.copy, osp.abspath(args.options_dir))
        code = sync(checkout, manifest, desired, not args.no_patch, False, 'copy' if args.copy else 'package')
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f'facd-install: error: {err}', file=sys.stderr)
        return 1
    if code == 0:
        print(next_steps(checkout))
    return code


if __name__ == '__main__':
    sys.exit(main())
