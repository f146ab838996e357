"""Dataset errors that name the dataset, the record and the file (a run guard of BasicSR's data loading).

BasicSR's ``imfrombytes`` returns None for bytes that do not decode (a corrupt LMDB value, a truncated PNG) and the
dataset then fails with ``AttributeError: 'NoneType' object has no attribute 'astype'``; a key missing from an LMDB
fails inside OpenCV. Neither names the dataset, the key or the file. These guards change BasicSR's data API, so they
are installed only for runs of our models (:mod:`facd_basicsr.host.run_guards`) or by an explicit call of
:func:`install_dataset_guards`; they make:

* ``FileClient.get`` remember what it read last (LMDB key and database, or file path) and fail on a missing key;
* ``imfrombytes`` in BasicSR's data modules raise ``ValueError`` when the bytes do not decode;
* ``__getitem__`` of every registered dataset re-raise any error as :class:`DataRecordError` naming the dataset
  (``name`` and type), the item's paths or keys and the record read last. An index past the end stays an
  ``IndexError`` (Python's sequence protocol, ``for x in dataset`` and ``list(dataset)``, stops on it).
"""
import functools
import sys
from typing import Any, Callable, Optional

from basicsr.utils import img_util
from basicsr.utils.file_client import FileClient
from basicsr.utils.registry import DATASET_REGISTRY

ORIGINAL_IMFROMBYTES = getattr(img_util.imfrombytes, 'facd_original', img_util.imfrombytes)


class DataRecordError(RuntimeError):
    """A training or validation record that cannot be read or decoded; the message names dataset, key and file."""


def checked_imfrombytes(content: bytes, flag: str = 'color', float32: bool = False) -> Any:
    """BasicSR's ``imfrombytes``, raising ``ValueError`` instead of returning None for bytes that do not decode."""
    if content is None:
        raise ValueError('no bytes to decode (missing record)')
    img = ORIGINAL_IMFROMBYTES(content, flag=flag, float32=False)
    if img is None:
        raise ValueError(f'{len(content)} bytes that do not decode as an image (corrupt or truncated)')
    return img.astype('float32') / 255. if float32 else img


checked_imfrombytes.facd_original = ORIGINAL_IMFROMBYTES


def describe_read(client: Optional[FileClient]) -> str:
    """What ``client`` read last: ``lq key 'coffee' of datasets/x.lmdb`` or ``file datasets/a.png``; '' if nothing."""
    last = getattr(client, 'facd_last_read', None)
    if last is None:
        return ''
    filepath, client_key = last
    if client.backend == 'lmdb':
        sources = dict(zip(client.client._client, client.client.db_paths))
        return f'{client_key} key {filepath!r} of the LMDB {sources.get(client_key, "?")}'
    return f'file {filepath}'


def guarded_get(get: Callable) -> Callable:
    """``FileClient.get`` that records the request and fails on a missing LMDB key."""
    if getattr(get, 'facd_patched', False):
        return get

    @functools.wraps(get)
    def patched(self, filepath, client_key='default'):
        self.facd_last_read = (str(filepath), client_key)
        value = get(self, filepath, client_key)
        if value is None:
            raise KeyError(f'no record {str(filepath)!r} ({describe_read(self)})')
        return value

    patched.facd_patched = True
    return patched


def item_description(dataset, index) -> str:
    """The paths or keys of item ``index`` when the dataset lists them (``dataset.paths[index]``)."""
    paths = getattr(dataset, 'paths', None)
    try:
        entry = paths[index % len(paths)] if paths else None
    except (TypeError, IndexError, KeyError):
        entry = None
    if isinstance(entry, dict):
        return ', '.join(f'{key} {value!r}' for key, value in entry.items())
    return '' if entry is None else repr(entry)


def guarded_getitem(getitem: Callable) -> Callable:
    """A dataset ``__getitem__`` whose errors name the dataset, the item and the record read last."""
    if getattr(getitem, 'facd_patched', False):
        return getitem

    @functools.wraps(getitem)
    def patched(self, index):
        try:
            return getitem(self, index)
        except DataRecordError:
            raise
        except IndexError:
            if past_the_end(self, index):
                raise  # the end of the sequence, not a broken record
            return reraise_naming_the_record(self, index)
        except Exception:  # noqa: B902  (any failure while reading one record)
            return reraise_naming_the_record(self, index)

    patched.facd_patched = True
    return patched


def past_the_end(dataset, index) -> bool:
    """Whether ``index`` lies outside ``dataset`` (an int index >= len, or < -len)."""
    try:
        size = len(dataset)
    except TypeError:
        return False
    return isinstance(index, int) and not -size <= index < size


def reraise_naming_the_record(dataset, index):
    """Raise the error being handled again as a :class:`DataRecordError` naming the dataset, the item and the record
    read last (call it inside an ``except`` block)."""
    err = sys.exc_info()[1]
    opt = getattr(dataset, 'opt', None) or {}
    item = item_description(dataset, index)
    last = describe_read(getattr(dataset, 'file_client', None))
    where = '; '.join(part for part in (item, f'while reading the {last}' if last else '') if part)
    raise DataRecordError(f'dataset {opt.get("name", "?")!r} ({type(dataset).__name__}), item {index} '
                          f'({where}): {type(err).__name__}: {err}') from err


def install_dataset_guards() -> None:
    """Apply the three patches (to every dataset registered so far); calling it again changes nothing."""
    FileClient.get = guarded_get(FileClient.get)
    for name, module in list(sys.modules.items()):
        if (name.startswith('basicsr.data') or name in ('basicsr.utils', 'basicsr.utils.img_util')) and \
                getattr(module, 'imfrombytes', None) is ORIGINAL_IMFROMBYTES:
            module.imfrombytes = checked_imfrombytes
    for _, cls in DATASET_REGISTRY:
        if '__getitem__' in vars(cls):
            cls.__getitem__ = guarded_getitem(cls.__getitem__)
