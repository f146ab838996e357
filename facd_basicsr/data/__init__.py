"""Import every ``*_dataset.py`` file here so its classes register into BasicSR's dataset registry."""
from facd_basicsr.registry import import_modules_with_suffix

_modules = import_modules_with_suffix(__file__, __name__, '_dataset.py')
