"""The package's three parts stay apart, and every code path the docs name exists (option files: test_options.py).

Runtime (what ``model_type: FACDModel`` imports): ``facd_basicsr`` itself, ``archs/``, ``data/``, ``losses/``,
``models/``, ``distill/``, ``host/``. User tools: ``facd_basicsr/tools/``. Study harness (not installed):
``facd_study/``.
"""
import ast
import glob
import itertools
import os.path as osp
import re
import subprocess
import sys

from setuptools import find_packages

from conftest import REPO_ROOT

RUNTIME_DIRS = ('archs', 'data', 'losses', 'models', 'distill', 'host')
HARNESS = ('facd_study', 'facd_basicsr.tools')


def test_training_runtime_imports_neither_the_harness_nor_the_tools():
    """A fresh interpreter that builds FACDModel's module and the train entry loads no harness or tool module."""
    probe = ('import sys, facd_basicsr, facd_basicsr.train; from facd_basicsr.models.facd_model import FACDModel; '
             'from basicsr.utils.registry import MODEL_REGISTRY; assert "FACDModel" in MODEL_REGISTRY; '
             f'print(sorted(m for m in sys.modules if m.startswith({HARNESS!r})))')
    done = subprocess.run([sys.executable, '-c', probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'


def imported_modules(path):
    """Every module name an ``import`` or ``from ... import`` statement of ``path`` names (lazy imports too)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_runtime_file_imports_the_harness_or_the_tools():
    files = glob.glob(osp.join(REPO_ROOT, 'facd_basicsr', '*.py'))
    for folder in RUNTIME_DIRS:
        files += glob.glob(osp.join(REPO_ROOT, 'facd_basicsr', folder, '*.py'))
    offenders = {
        osp.relpath(path, REPO_ROOT): sorted(m for m in imported_modules(path) if m.startswith(HARNESS))
        for path in files
    }
    assert len(files) > 15
    assert {k: v for k, v in offenders.items() if v} == {}


def test_tools_do_not_import_the_harness():
    files = glob.glob(osp.join(REPO_ROOT, 'facd_basicsr', 'tools', '*.py'))
    offenders = {osp.basename(p): sorted(m for m in imported_modules(p) if m.startswith('facd_study')) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_installed_package_holds_no_harness():
    packages = find_packages(where=REPO_ROOT, include=['facd_basicsr', 'facd_basicsr.*'])
    assert 'facd_basicsr.distill' in packages and 'facd_basicsr.tools' in packages
    assert not [p for p in packages if 'study' in p]


# paths of a BasicSR checkout that the docs tell users to run there
BASICSR_PATHS = {'scripts/download_pretrained_models.py', 'scripts/data_preparation/extract_subimages.py'}
PATH_RE = re.compile(r'(?<![\w/.-])((?:scripts|facd_basicsr|facd_study|benchmarks|docs|tests)/[\w./{},*<>-]*)')


def expand_braces(text):
    """``a/{b,c}.py`` -> ``['a/b.py', 'a/c.py']`` (every brace group, one level deep)."""
    parts = re.split(r'\{([^{}]*)\}', text)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(combo) for combo in itertools.product(*choices)]


def named_paths(markdown):
    """Repository paths named in a markdown text; placeholders (``<...>``, ``*``, ``X{s}``) are skipped."""
    found = set()
    for match in PATH_RE.finditer(markdown):
        token = match.group(1).rstrip('.,')
        if '<' in token or '*' in token:
            continue
        found.update(p.rstrip('.,') for p in expand_braces(token))
    return found


def test_named_paths_expand():
    assert named_paths('see `facd_basicsr/{archs,losses}/` and scripts/demo.py.') == {
        'facd_basicsr/archs/', 'facd_basicsr/losses/', 'scripts/demo.py'}
    assert named_paths('`options/train/FACD/<file>.yml`') == set()


def test_every_path_named_in_the_docs_exists():
    docs = [osp.join(REPO_ROOT, 'README.md')] + sorted(glob.glob(osp.join(REPO_ROOT, 'docs', '*.md')))
    missing = {}
    for doc in docs:
        with open(doc, encoding='utf-8') as f:
            text = f.read()
        gone = sorted(p for p in named_paths(text) - BASICSR_PATHS if not osp.exists(osp.join(REPO_ROOT, p)))
        if gone:
            missing[osp.relpath(doc, REPO_ROOT)] = gone
    assert missing == {}
