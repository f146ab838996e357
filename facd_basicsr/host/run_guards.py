"""The guarantees a run of our models gets from BasicSR's pipeline, installed when such a run starts.

``RobustSRModel`` and its subclasses (``FACDModel``) promise more than BasicSR's data API and training entry give.
When ``parse_options`` (wrapped by :mod:`facd_basicsr.host.patches`) returns options whose ``model_type`` is one of
them, this module:

* points the training module's ``load_resume_state`` at :func:`facd_basicsr.host.resume.load_resume_state`
  (weights-only, CPU-capable, never from an incomplete checkpoint);
* installs the dataset guards of :mod:`facd_basicsr.host.data_errors` (errors that name the dataset, the key and the
  file);
* logs through :class:`facd_basicsr.host.message_logger.FinalEtaMessageLogger` (no ``eta: -1 day`` on the last
  iteration).

Programs that run any other model see BasicSR's own functions. To give them the data guards anyway, call
:func:`facd_basicsr.host.data_errors.install_dataset_guards` yourself.
"""
import sys
from typing import Optional

from basicsr.utils.registry import MODEL_REGISTRY

from facd_basicsr.host.data_errors import install_dataset_guards
from facd_basicsr.host.message_logger import FinalEtaMessageLogger
from facd_basicsr.host.resume import cpu_capable, load_resume_state

PIPELINE_MODULES = ('basicsr.train', 'basicsr.test', '__main__')


def is_our_model(model_type: Optional[str]) -> bool:
    """Whether ``model_type`` names RobustSRModel or a subclass of it in BasicSR's registry."""
    from facd_basicsr.models.robust_sr_model import RobustSRModel
    if not isinstance(model_type, str) or model_type not in MODEL_REGISTRY:
        return False
    cls = MODEL_REGISTRY.get(model_type)
    return isinstance(cls, type) and issubclass(cls, RobustSRModel)


def training_modules() -> list:
    """The loaded modules that define ``train_pipeline`` and ``load_resume_state``."""
    modules = [sys.modules.get(name) for name in PIPELINE_MODULES]
    return [m for m in modules if m is not None and hasattr(m, 'train_pipeline') and hasattr(m, 'load_resume_state')]


def patch_training_modules() -> None:
    """Point every loaded module that defines ``train_pipeline`` at our ``load_resume_state`` and log line."""
    for module in training_modules():
        module.load_resume_state = load_resume_state
        if hasattr(module, 'MessageLogger'):
            module.MessageLogger = FinalEtaMessageLogger


def fix_cpu_resume() -> None:
    """Any run: BasicSR's ``load_resume_state``, made to work without CUDA (:func:`cpu_capable`)."""
    for module in training_modules():
        if module.load_resume_state is not load_resume_state:
            module.load_resume_state = cpu_capable(module.load_resume_state)


def install_run_guards() -> None:
    """Install the guards of a run of our models (idempotent)."""
    patch_training_modules()
    install_dataset_guards()
