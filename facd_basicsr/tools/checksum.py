"""Verify downloaded teacher files: ``facd-checksum FILE [FILE...]``.

Each file is first loaded the way our loaders load it (``.pth`` with ``weights_only=True``: a pickle is never
executed; ``.safetensors``, traiNNer-redux's and HuggingFace's format, by the safetensors reader), then its
SHA-256 is compared with the prefix known for its name (the table in :mod:`facd_basicsr.tools.teacher_files`, or the
``-<8 hex>.pth`` tag of BasicSR zoo names). Prints one line per file: ``OK``, ``MISMATCH``, ``UNKNOWN`` (no published
hash: nothing to compare with), ``UNREADABLE`` (truncated, corrupt, not a torch file, or a pickle that would run
code; the reason is printed) or ``MISSING``. Exit status 1 when any file is MISMATCH, UNREADABLE or MISSING, else 0.
"""
import argparse
import hashlib
import os.path as osp
import sys
from typing import List, Optional, Tuple

from facd_basicsr.host.checkpoint import CheckpointError, load_weights_file
from facd_basicsr.tools.teacher_files import TEACHER_FILES, expected_prefix, find_teacher_file

FAILED = ('MISMATCH', 'UNREADABLE', 'MISSING')


def sha256_of(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: str) -> Tuple[str, str]:
    """(status, detail) for one file; status is OK, MISMATCH, UNKNOWN, UNREADABLE or MISSING."""
    if not osp.isfile(path):
        return 'MISSING', 'no such file'
    digest = sha256_of(path)
    try:
        load_weights_file(path, 'facd-checksum', 'file')
    except CheckpointError as err:
        return 'UNREADABLE', f'{err} (sha256 {digest})'
    expected = expected_prefix(path)
    entry = find_teacher_file(path)
    source = f'; {entry.source}' if entry else ''
    if expected is None:
        reason = 'no published hash for this file' if entry else 'not in the table of teacher files'
        return 'UNKNOWN', f'sha256 {digest} ({reason}{source})'
    if digest.startswith(expected):
        return 'OK', f'sha256 {digest[:16]}... matches {expected}{source}'
    return 'MISMATCH', f'sha256 {digest} does not start with {expected}: corrupt or different file{source}'


def list_table() -> None:
    """Print the table of known teacher files."""
    for entry in TEACHER_FILES:
        options = ', '.join(entry.option_files) or '-'
        print(f'{entry.name:50s} {entry.sha256_prefix or "(no hash)":10s} {options}\n    {entry.source}')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-checksum``; returns 1 when a file is MISMATCH, UNREADABLE or MISSING, else 0."""
    parser = argparse.ArgumentParser(prog='facd-checksum', description=__doc__.split('\n')[0])
    parser.add_argument('files', nargs='*', help='checkpoint files to verify')
    parser.add_argument('--list', action='store_true', help='print the table of known teacher files')
    args = parser.parse_args(argv)
    if args.list:
        list_table()
    if not args.files and not args.list:
        parser.error('give at least one FILE, or --list')
    failed = False
    for path in args.files:
        status, detail = check_file(path)
        failed |= status in FAILED
        print(f'{status:8s} {path}: {detail}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
