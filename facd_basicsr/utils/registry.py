"""Registration that tolerates the same class being defined twice.

``facd_basicsr`` can be imported both as the installed package and as a copy inside a BasicSR checkout. BasicSR's
``Registry.register`` asserts on duplicate names, so the second import would crash the registry scan. Registering
only the first definition keeps every name unique and makes a double import harmless.
"""
from typing import Callable, TypeVar

T = TypeVar('T')


def register_once(registry) -> Callable[[T], T]:
    """Decorator: register ``obj`` under its ``__name__`` unless that name is already taken.

    Args:
        registry (basicsr.utils.registry.Registry): e.g. ``ARCH_REGISTRY``.

    Returns:
        Callable: a decorator that returns the decorated object unchanged.
    """

    def deco(obj: T) -> T:
        if obj.__name__ not in registry:
            registry.register(obj)
        return obj

    return deco
