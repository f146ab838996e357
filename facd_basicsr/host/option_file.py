"""Option files read without running code: BasicSR's ordered YAML, on PyYAML's safe constructor.

BasicSR's ``basicsr.utils.options.ordered_yaml()`` returns PyYAML's full ``Loader`` (``CLoader``) with an
``OrderedDict`` mapping constructor. That constructor also builds Python objects from tags such as
``!!python/object/apply:os.system [...]``, so an option file from a stranger can run code while it is read.

The loader here is PyYAML's ``SafeLoader`` (``CSafeLoader`` when libyaml is there, as BasicSR picks ``CLoader``)
with the same ``OrderedDict`` mapping constructor. Both share PyYAML's resolver, so every ordinary option file reads
to the same value: the same scalars (``~`` -> None, ``!!float 1e-4`` -> float, a bare ``1e-4`` -> str) and the same
key order. A tag that no safe constructor knows (every ``!!python/...`` tag, any ``!custom`` tag) raises
:class:`OptionFileError` naming the file, the line and the tag, and nothing is constructed.
"""
import os.path as osp
from collections import OrderedDict
from typing import Any, Optional

import yaml

try:
    from yaml import CSafeLoader as _BaseSafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseSafeLoader

__all__ = ['OptionFileError', 'load_option_file', 'load_option_text']


class OptionFileError(ValueError):
    """An option file that cannot be read, is not valid YAML, or holds a tag that would construct an object.

    The message is ``<path>:<line>: <what is wrong>`` (``<path>: <what is wrong>`` when no line is known).

    Args:
        source (str): the file (or the ``source`` name of a string).
        what (str): what is wrong.
        line (int | None): 1-based line, when known.
    """

    def __init__(self, source: str, what: str, line: Optional[int] = None) -> None:
        self.source = source
        self.line = line
        self.what = what
        super().__init__(f'{source}:{line}: {what}' if line is not None else f'{source}: {what}')


class _RefusedTag(Exception):
    """Raised inside the loader for a tag without a safe constructor; turned into :class:`OptionFileError`."""

    def __init__(self, tag: str, line: Optional[int]) -> None:
        super().__init__(tag)
        self.tag = tag
        self.line = line


class _OrderedSafeLoader(_BaseSafeLoader):
    """``SafeLoader`` whose mappings are ``OrderedDict`` (as BasicSR's) and which refuses unknown tags."""


def _mapping(loader: yaml.BaseLoader, node: yaml.MappingNode) -> OrderedDict:
    """The same mapping constructor as BasicSR's ``ordered_yaml()``: ``OrderedDict(construct_pairs(node))``."""
    return OrderedDict(loader.construct_pairs(node))


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:python/name:os.system`` as written in a file: ``!!python/name:os.system``."""
    prefix = 'tag:yaml.org,2002:'
    return '!!' + tag[len(prefix):] if tag.startswith(prefix) else tag


def _refuse(loader: yaml.BaseLoader, node: yaml.Node) -> Any:
    """Constructor of every tag without a safe constructor: construct nothing, report the tag and its line."""
    mark = getattr(node, 'start_mark', None)
    raise _RefusedTag(_short_tag(node.tag), mark.line + 1 if mark is not None else None)


# add_constructor copies the class table first, so neither PyYAML's SafeLoader nor BasicSR's loader changes.
_OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_OrderedSafeLoader.add_constructor(None, _refuse)


def _refusal(tag: str) -> str:
    """Why ``tag`` is refused, in words."""
    if tag.startswith('!!python/'):
        why = 'it would construct a Python object, and option files are read with a safe loader'
    elif tag == '!!merge':
        why = 'YAML merge keys (<<) are not read (BasicSR\'s loader refuses them too); write the keys out'
    else:
        why = 'no safe constructor knows it (BasicSR\'s loader refuses unknown tags too)'
    return f'tag {tag!r} is not allowed in an option file: {why}; nothing was constructed'


def _yaml_error(err: yaml.YAMLError, source: str) -> OptionFileError:
    """A PyYAML error as an :class:`OptionFileError` with the line of the problem."""
    mark = getattr(err, 'problem_mark', None) or getattr(err, 'context_mark', None)
    parts = [getattr(err, 'context', None), getattr(err, 'problem', None)]
    what = ', '.join(str(p) for p in parts if p) or str(err).splitlines()[0]
    context_mark = getattr(err, 'context_mark', None)
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        what += f' (the construct opened at line {context_mark.line + 1})'
    return OptionFileError(source, f'not valid YAML: {what}', mark.line + 1 if mark is not None else None)


def load_option_text(text: str, source: str = '<string>') -> OrderedDict:
    """Read an option file's text as BasicSR does, without constructing any Python object.

    Args:
        text (str): the YAML text.
        source (str): the name used in messages, e.g. the file path. Default: ``'<string>'``.

    Returns:
        OrderedDict: the top-level mapping, nested mappings as ``OrderedDict`` too.

    Raises:
        OptionFileError: invalid YAML, a refused tag, or a top level that is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_OrderedSafeLoader)  # the safe loader above
    except _RefusedTag as err:
        raise OptionFileError(source, _refusal(err.tag), err.line) from None
    except yaml.YAMLError as err:
        raise _yaml_error(err, source) from None
    except (ValueError, TypeError) as err:  # a standard tag on a value it cannot hold, e.g. !!float abc
        raise OptionFileError(source, f'cannot construct a tagged value: {err}') from None
    if not isinstance(data, OrderedDict):
        got = 'an empty file' if data is None else type(data).__name__
        raise OptionFileError(source, f'expected a YAML mapping (key: value lines) at the top level, got {got}')
    return data


def load_option_file(path: str) -> OrderedDict:
    """Read the option file ``path`` as BasicSR's ``ordered_yaml()`` loader does, without running any code.

    Args:
        path (str): a YAML option file.

    Returns:
        OrderedDict: the top-level mapping.

    Raises:
        OptionFileError: the file is missing or unreadable, is not valid YAML, holds a refused tag, or its top
            level is not a mapping. The message names the file (and the line when known).
    """
    if osp.isdir(path):
        raise OptionFileError(path, 'is a folder, not an option file')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise OptionFileError(path, 'option file not found') from None
    except UnicodeDecodeError as err:
        raise OptionFileError(path, f'cannot read the option file: not UTF-8 text ({err.reason})') from None
    except OSError as err:
        raise OptionFileError(path, f'cannot read the option file: {err.strerror or err}') from None
    return load_option_text(text, path)
