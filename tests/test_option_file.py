"""The safe option-file reader (``facd_basicsr.host.option_file``): BasicSR's values, no code run."""
import glob
import os.path as osp
from collections import OrderedDict

import pytest
import yaml
from basicsr.utils.options import ordered_yaml

from facd_basicsr.host.option_file import OptionFileError, load_option_file, load_option_text

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHIPPED = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True))


def basicsr_load(path):
    """What BasicSR's ``parse_options`` reads from ``path`` (its ``ordered_yaml()`` loader)."""
    with open(path, mode='r') as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def test_object_tag_runs_nothing_and_names_file_line_tag(tmp_path):
    marker = tmp_path / 'MARKER'
    opt = tmp_path / 'evil.yml'
    opt.write_text(f'name: evil\nnum_gpu: 0\nnote: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(OptionFileError) as info:
        load_option_file(str(opt))
    assert not marker.exists()
    assert str(info.value).startswith(f'{opt}:3: tag \'!!python/object/apply:os.system\' is not allowed')
    assert info.value.line == 3
    # the control: BasicSR's own loader does run it, so the marker check above can fail
    basicsr_load(str(opt))
    assert marker.exists()


@pytest.mark.parametrize('tag', ['!!python/name:os.system', '!!python/object:collections.OrderedDict {}', '!foo 3'])
def test_other_unsafe_or_unknown_tags_are_refused(tag):
    with pytest.raises(OptionFileError, match=r"^x\.yml:2: tag '!"):
        load_option_text(f'a: 1\nb: {tag}\n', 'x.yml')


def test_shipped_option_files_read_as_basicsr_reads_them():
    assert len(SHIPPED) > 50
    for path in SHIPPED:
        ours = load_option_file(path)
        assert ours == basicsr_load(path), path
        assert isinstance(ours, OrderedDict) and list(ours) == list(basicsr_load(path)), path


def test_scalars_and_order_as_basicsr():
    text = ('name: x\nlr: !!float 2e-4\nbare: 1e-4\nnone: ~\nflag: true\nmilestones: [250000, 400000]\n'
            'nested:\n  z: 1\n  a: {b: 2}\n')
    opt = load_option_text(text)
    assert opt == yaml.load(text, Loader=ordered_yaml()[0])
    assert opt['lr'] == 2e-4 and isinstance(opt['lr'], float)
    assert opt['bare'] == '1e-4' and opt['none'] is None and opt['flag'] is True
    assert list(opt['nested']) == ['z', 'a'] and isinstance(opt['nested']['a'], OrderedDict)


def test_syntax_error_names_file_and_line(tmp_path):
    opt = tmp_path / 'broken.yml'
    opt.write_text('name: x\nnetwork_g: {type: EDSR, num_feat: 4\nnum_gpu: 0\n')
    with pytest.raises(OptionFileError) as info:
        load_option_file(str(opt))
    assert str(info.value).startswith(f'{opt}:') and 'not valid YAML' in str(info.value)
    assert info.value.line in (3, 4)
    assert 'opened at line 2' in str(info.value)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(OptionFileError, match=r'missing\.yml: option file not found$'):
        load_option_file(str(tmp_path / 'missing.yml'))
    with pytest.raises(OptionFileError, match='is a folder'):
        load_option_file(str(tmp_path))
    latin = tmp_path / 'latin.yml'
    latin.write_bytes(b'name: caf\xe9\n')
    with pytest.raises(OptionFileError, match='latin.yml: cannot read the option file: not UTF-8'):
        load_option_file(str(latin))
    with pytest.raises(OptionFileError, match=r'^<string>: expected a YAML mapping .* got list$'):
        load_option_text('- 1\n- 2\n')


def test_basicsr_loader_is_left_as_it_was():
    loader = ordered_yaml()[0]
    assert load_option_text('a: 1\n') == {'a': 1}
    assert yaml.load('a: !!python/name:os.path.join\n', Loader=loader)['a'] is osp.join
    assert yaml.safe_load('a: {b: 1}\n') == {'a': {'b': 1}} and type(yaml.safe_load('a: 1\n')) is dict
