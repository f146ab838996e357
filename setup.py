#!/usr/bin/env python
"""Packaging for facd_basicsr, the FACD distillation plugin for BasicSR.

Install torch first and then this package with ``--no-build-isolation`` (see the README): basicsr 1.4.2 ships as an
sdist whose build asks for torch, and an isolated build would download a whole torch into a throw-away env.
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    init = osp.join(osp.dirname(osp.abspath(__file__)), 'facd_basicsr', '__init__.py')
    with open(init, encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip("'")
    raise RuntimeError(f'__version__ not found in {init}')


setup(
    name='facd_basicsr',
    version=read_version(),
    description='FACD: feature-domain adaptive contrastive distillation for super-resolution, as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['facd_basicsr', 'facd_basicsr.*']),
    python_requires='>=3.8',
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=1.13',
        'torchvision',
        'opencv-python',
        'numpy',
        'lmdb',
        'pyyaml',
        'tb-nightly',
        'scikit-image',
        'tqdm',
        'safetensors',  # safetensors teachers (traiNNer-redux, HuggingFace) and facd-export --format safetensors
    ],
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'flake8', 'isort', 'yapf', 'safetensors', 'spandrel>=0.4.2,<0.5'],
        'export': ['onnx', 'onnxruntime', 'spandrel>=0.4.2,<0.5'],  # spandrel: facd-export checks its files with it
        'plot': ['matplotlib'],
        'study': ['matplotlib', 'scikit-learn'],  # the x4 study's training photos (scripts/study.py --scale x4)
    },
    entry_points={
        'console_scripts': [
            'facd-train=facd_basicsr.train:main',
            'facd-test=facd_basicsr.test:main',
            'facd-convert-teacher=facd_basicsr.tools.convert_teacher:main',
            'facd-checksum=facd_basicsr.tools.checksum:main',
            'facd-install=facd_basicsr.tools.install_into_basicsr:main',
            'facd-eval=facd_basicsr.tools.evaluate:main',
            'facd-infer=facd_basicsr.tools.infer:main',
            'facd-export=facd_basicsr.tools.export:main',
            'facd-stats=facd_basicsr.tools.stats:main',
            'facd-prepare=facd_basicsr.tools.prepare:main',
        ],
    },
)
