"""Every command and Python name that README.md and docs/*.md give exists and answers (issue 29, stale references).

- every ``facd-*`` console script named is declared in setup.py, installed next to the interpreter, and its real
  script file answers ``--help`` with exit 0 and a usage text;
- every ``python -m facd_basicsr...`` module answers ``--help`` the same way (``facd_basicsr.tools.<tool>`` stands for
  every tool that has a console script);
- every dotted ``facd_basicsr.x.y[.name]`` reference imports and resolves.

The ``--help`` runs happen in ONE child interpreter, one after the other: each separate interpreter pays ~6 s of
CPU for importing torch and BasicSR, ten times over, while the thing under test (the script and its parser) is the
same either way.
"""
import glob
import importlib
import json
import os.path as osp
import re
import subprocess
import sys

from conftest import REPO_ROOT

DOCS = [osp.join(REPO_ROOT, 'README.md')] + sorted(glob.glob(osp.join(REPO_ROOT, 'docs', '*.md')))
SCRIPT_RE = re.compile(r'(?<![\w./#-])facd-[a-z]+(?:-[a-z]+)*(?![\w./-])')
MODULE_RE = re.compile(r'python3? -m (facd_basicsr(?:\.\w+)*)(\.<\w+>)?')
DOTTED_RE = re.compile(r'(?<![\w/.-])facd_basicsr(?:\.[A-Za-z_]\w*)+')
NOT_COMMANDS = {'facd-basicsr'}  # the repository's name (README's title)

CHILD = r'''
import contextlib, io, json, runpy, sys
import facd_basicsr  # noqa: F401  (compat alias before basicsr)
results = {}
for kind, name, target in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [target, '--help']
    code = 'returned'
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if kind == 'script':
                runpy.run_path(target, run_name='__main__')
            else:
                runpy.run_module(target, run_name='__main__', alter_sys=True)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else str(err.code))
    except BaseException as err:  # an import error, a crash: reported, not raised
        code = f'{type(err).__name__}: {err}'
    results[name] = [code, out.getvalue()[:2000]]
print(json.dumps(results))
'''


def _doc_texts():
    for path in DOCS:
        with open(path, encoding='utf-8') as f:
            yield osp.relpath(path, REPO_ROOT), f.read()


def console_scripts():
    """``{name: 'module:function'}`` declared in setup.py."""
    with open(osp.join(REPO_ROOT, 'setup.py'), encoding='utf-8') as f:
        return dict(re.findall(r"'(facd-[\w-]+)=([\w.]+:\w+)'", f.read()))


def named_commands():
    """(console scripts, modules) named in the docs, each with the first file that names it."""
    scripts, modules = {}, {}
    tool_modules = sorted({target.split(':')[0] for target in console_scripts().values() if '.tools.' in target})
    for doc, text in _doc_texts():
        for name in SCRIPT_RE.findall(text):
            if name not in NOT_COMMANDS:
                scripts.setdefault(name, doc)
        for module, template in MODULE_RE.findall(text):
            for name in (tool_modules if template and module == 'facd_basicsr.tools' else [module]):
                modules.setdefault(name, doc)
    return scripts, modules


def test_the_docs_name_commands_at_all():
    scripts, modules = named_commands()
    assert {'facd-train', 'facd-eval', 'facd-infer', 'facd-prepare', 'facd-export'} <= set(scripts)
    assert 'facd_basicsr.tools.evaluate' in modules  # from the facd_basicsr.tools.<tool> template


def test_every_named_command_exists_and_answers_help():
    scripts, modules = named_commands()
    declared = console_scripts()
    undeclared = {name: doc for name, doc in scripts.items() if name not in declared}
    assert not undeclared, f'console scripts named in the docs but not declared in setup.py: {undeclared}'
    bin_dir = osp.dirname(sys.executable)
    missing = {name: doc for name, doc in scripts.items() if not osp.isfile(osp.join(bin_dir, name))}
    assert not missing, f'not installed next to {sys.executable} (pip install -e .): {missing}'
    jobs = [('script', name, osp.join(bin_dir, name)) for name in sorted(scripts)]
    jobs += [('module', name, name) for name in sorted(modules)]
    proc = subprocess.run([sys.executable, '-c', CHILD, json.dumps(jobs)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={'OMP_NUM_THREADS': '1', 'PATH': bin_dir})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    named = {**scripts, **modules}
    bad = {f'{name} (named in {named[name]})': code for name, (code, _) in results.items() if code != 0}
    assert not bad, f'--help did not exit 0: {bad}'
    no_usage = [name for name, (_, text) in results.items() if 'usage' not in text.lower()]
    assert not no_usage, f'--help printed no usage text: {no_usage}'


def test_every_dotted_python_name_in_the_docs_resolves():
    """``facd_basicsr.distill.teacher_check.check_teacher`` and the like: import the longest module, get the rest."""
    unresolved = {}
    for doc, text in _doc_texts():
        for dotted in DOTTED_RE.findall(text):
            parts = dotted.split('.')
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module('.'.join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    unresolved.setdefault(dotted, doc)
                break
            else:
                unresolved.setdefault(dotted, doc)
    assert not unresolved, f'names in the docs that do not resolve: {unresolved}'
