"""``facd-prepare --check`` with the four free benchmark sets and without Manga109 (issue 29 item 3).

The shipped test option files read Set5, Set14, B100 and Urban100; Manga109 has one test file of its own per recipe
(options/test/manga109/). A tree holding the free sets passes the check; the Manga109 files are reported as
"missing, optional". Anything else that is absent, or an optional set that is there but broken, still fails it.
"""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from facd_basicsr.tools.prepare_check import check_tree, file_status, run_check

from conftest import REPO_ROOT

TEST_OPTIONS = osp.join(REPO_ROOT, 'options', 'test')
FREE = ('Set5', 'Set14', 'BSDS100', 'Urban100')


def write_set(root, name, scales=(2, 3, 4), side=24, lr_side=None):
    """``datasets/<name>/GTmod12`` and ``LRbicx{s}`` with one image pair (random pixels; the check reads sizes)."""
    rng = np.random.default_rng(0)
    gt_dir = root / 'datasets' / name / 'GTmod12'
    gt_dir.mkdir(parents=True)
    cv2.imwrite(str(gt_dir / 'img_000.png'), rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    for s in scales:
        lr_dir = root / 'datasets' / name / f'LRbicx{s}'
        lr_dir.mkdir()
        lr = lr_side or side // s
        cv2.imwrite(str(lr_dir / 'img_000.png'), rng.integers(0, 255, (lr, lr, 3), dtype=np.uint8))


@pytest.fixture
def free_tree(tmp_path):
    for name in FREE:
        write_set(tmp_path, name)
    return tmp_path


def run(root, paths):
    lines = []
    code = run_check(str(root), paths, out=lines.append)
    return code, lines


def test_the_four_free_sets_pass_and_manga109_files_are_missing_optional(free_tree):
    code, lines = run(free_tree, [TEST_OPTIONS])
    assert code == 0, '\n'.join(lines)
    rel = {osp.relpath(osp.abspath(line.split(': ', 1)[0]), REPO_ROOT): line.split(': ', 1)[1]
           for line in lines if line.startswith(('options', '/', '.')) and ': ' in line}
    manga = [p for p in rel if p.startswith('options/test/manga109/')]
    others = [p for p in rel if not p.startswith('options/test/manga109/')]
    assert len(manga) == len(others) >= 65
    assert all(rel[p] == 'missing, optional' for p in manga)
    assert all(rel[p] == 'ok' for p in others)
    assert rel['options/test/test_FACD_SwinIR_x3.yml'] == 'ok'
    assert '  - datasets/Manga109/LRbicx4 (datasets.test_1.dataroot_lq): not found' in lines
    assert lines[-1].endswith(f'{len(others)} option file(s) ok, 0 incomplete, {len(manga)} optional with missing '
                              'data (Manga109 is not freely downloadable; facd-prepare --benchmark prepares it when '
                              'you have it)')


def test_a_missing_free_set_is_required(free_tree):
    os.rename(free_tree / 'datasets' / 'Urban100', free_tree / 'datasets' / 'Urban100_moved')
    code, lines = run(free_tree, [TEST_OPTIONS])
    assert code == 1
    assert 'options/test/test_KD_Compact_x4.yml: MISSING' in [line.replace(REPO_ROOT + '/', '') for line in lines]
    assert '  - datasets/Urban100/GTmod12 (datasets.test_4.dataroot_gt): not found' in lines


def test_manga109_present_but_broken_is_a_problem_not_optional(free_tree):
    write_set(free_tree, 'Manga109', scales=(2, 3, 4), side=24, lr_side=5)  # LR sizes disagree with every scale
    code, lines = run(free_tree, [osp.join(TEST_OPTIONS, 'manga109', 'test_FACD_RCAN_x2.yml')])
    assert code == 1
    assert lines[0].endswith('test_FACD_RCAN_x2.yml: MISSING')
    assert 'GT/LQ size(s) disagree with scale 2' in lines[1]


def test_manga109_present_makes_its_files_ok(free_tree):
    write_set(free_tree, 'Manga109')
    report = check_tree(str(free_tree), [osp.join(TEST_OPTIONS, 'manga109')])
    assert report and all(file_status(problems) == 'ok' for _, problems in report)


def test_status_of_each_kind_of_report():
    assert file_status(None) == 'skipped' and file_status([]) == 'ok'
    assert file_status(['datasets/Manga109/GTmod12 (datasets.test_1.dataroot_gt): not found']) == 'optional'
    assert file_status(['datasets/Manga109/GTmod12 (datasets.test_1.dataroot_gt): no images']) == 'missing'
    assert file_status(['datasets/Manga109/GTmod12 (datasets.test_1.dataroot_gt): not found',
                        'datasets/Set5/GTmod12 (datasets.test_2.dataroot_gt): not found']) == 'missing'
    assert file_status(['datasets/Manga1090/GTmod12 (datasets.val.dataroot_gt): not found']) == 'missing'


def test_an_empty_tree_fails_and_nothing_checked_fails(tmp_path, capsys):
    code, lines = run(tmp_path, [TEST_OPTIONS])
    assert code == 1 and any(line.endswith(': MISSING') for line in lines)
    demo = osp.join(REPO_ROOT, 'options', 'demo')  # reads data facd-prepare does not write: every file skipped
    assert run(tmp_path, [demo])[0] == 1
    assert 'no option file checked' in capsys.readouterr().err


def test_the_console_script_exits_0_without_manga109(free_tree, capsys):
    """``facd-prepare --check`` (the entry point, not only its helper) passes on the four free sets."""
    from facd_basicsr.tools.prepare import main
    assert main(['--check', '--root', str(free_tree), '--opt', TEST_OPTIONS]) == 0
    assert 'missing, optional' in capsys.readouterr().out
