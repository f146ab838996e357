"""``benchmarks/gpu_check.py --device cpu --quick``: the GPU check's own code path, on CPU, so that it never rots."""
import os.path as osp
import re

from conftest import REPO_ROOT, run_python

SETTINGS = ['fp32', 'teacher bf16 + fp32 conv_last', '+ channels_last', '+ student amp bf16',
            '+ compile (student only, aot_eager)']


def test_gpu_check_quick_form_runs_on_cpu_and_writes_its_tables(tmp_path):
    out = tmp_path / 'gpu_check.md'
    result = run_python([osp.join(REPO_ROOT, 'benchmarks', 'gpu_check.py'), '--device', 'cpu', '--quick', '--threads',
                         '1', '--out', str(out)], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert text in result.stdout  # the printed tables are the written ones
    train_rows = [line for line in text.splitlines() if line.startswith('| teacher EDSR') or line.startswith('| FACD')]
    assert len(train_rows) == 4 and 'auto_resume' in train_rows[-1]
    for row in train_rows:  # iterations, wall s, last l_pix, val PSNR: all finite numbers
        cells = [c.strip() for c in row.strip('|').split('|')][1:]
        assert all(re.fullmatch(r'-?\d+(\.\d+)?(e-?\d+)?', c) for c in cells), row
    drifts = []
    for config in ('edsr_ref', 'rcan_ref'):
        rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip('|').split('|')]
                                              for line in text.splitlines() if line.startswith(f'| {config} |'))}
        assert list(rows) == SETTINGS, rows
        assert rows['fp32'][5] == '1.00' and rows['fp32'][6] == '+0.0000'  # the reference row
        drifts.append(float(rows['teacher bf16 + fp32 conv_last'][6]))
        assert all(float(cells[2]) > 0 and float(cells[3]) > 0 for cells in rows.values())
    assert any(d != 0 for d in drifts)  # bf16 changes the teachers' outputs
