"""Foundation: compat alias, registration, idempotent import."""
import importlib
import subprocess
import sys

import pytest
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

import facd_basicsr
from facd_basicsr.registry import register_once

PROMISED = {
    ARCH_REGISTRY: ['FACDAdapter'],
    LOSS_REGISTRY: ['FACDContrastiveLoss', 'FeatureDistillLoss', 'FAKDAffinityLoss'],
    MODEL_REGISTRY: ['FACDModel'],
}


def test_every_promised_name_is_registered():
    missing = [name for registry, names in PROMISED.items() for name in names if name not in registry]
    assert not missing


def test_import_basicsr_fails_alone_and_works_after_facd_basicsr():
    """On basicsr 1.4.2 + torchvision >= 0.17 the bare import breaks; our package makes it work."""
    alone = subprocess.run([sys.executable, '-c', 'import basicsr'], capture_output=True, text=True)
    if alone.returncode == 0:
        pytest.skip('this basicsr/torchvision pair imports on its own (no functional_tensor problem)')
    assert 'functional_tensor' in alone.stderr
    after = subprocess.run([sys.executable, '-c', 'import facd_basicsr, basicsr; print(basicsr.__version__)'],
                           capture_output=True, text=True)
    assert after.returncode == 0, after.stderr


def test_reimport_and_second_copy_do_not_raise():
    importlib.reload(facd_basicsr.archs)
    importlib.reload(facd_basicsr.losses)
    importlib.reload(facd_basicsr.models)
    cls = MODEL_REGISTRY.get('FACDModel')

    # The same class defined by a second copy of the package (installed + inside a BasicSR checkout) is harmless.
    copy = type('FACDModel', (object, ), {'__module__': 'vendored.facd_basicsr.models.facd_model'})
    assert register_once(MODEL_REGISTRY)(copy) is copy
    assert MODEL_REGISTRY.get('FACDModel') is cls

    # Another plugin's class under a name we hold is refused, naming both modules (BasicSR raises too).
    other = type('FACDModel', (object, ), {'__module__': 'other_plugin.models'})
    with pytest.raises(KeyError, match='facd_basicsr.models.facd_model.*other_plugin.models'):
        register_once(MODEL_REGISTRY)(other)
    assert MODEL_REGISTRY.get('FACDModel') is cls
