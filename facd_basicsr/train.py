"""Train with BasicSR's loop and the FACD plugin: ``python facd_basicsr/train.py -opt options/X.yml``.

Accepts BasicSR's flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``). Outputs
(``experiments/``, ``tb_logger/``) go under the current working directory, as do relative dataroots.
Distributed: ``torchrun --nproc_per_node=N facd_basicsr/train.py -opt X.yml --launcher pytorch`` (gloo on CPUs,
NCCL on GPUs); see docs/distributed.md.
"""
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a file: make the package importable and stop the folder shadowing modules
    _here = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _here]
    sys.path.insert(0, osp.dirname(_here))

import facd_basicsr  # noqa: E402,F401  (compat alias, registration and host patches before basicsr.train)


def main() -> None:
    """BasicSR's train_pipeline with our start-up checks (one ``error:`` line and exit status 2 when one fails)."""
    from basicsr.train import train_pipeline

    from facd_basicsr.host.startup import run_checked
    run_checked(train_pipeline)


if __name__ == '__main__':
    main()
