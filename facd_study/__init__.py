"""The study harness of this repository: demo data, the experiment runner, the study rows, scoring and figures.

Used by ``make demo``, ``make mini-table``, ``scripts/study.py``, the tests and the benchmarks. It is not part of the
installed package: a ``pip install`` ships the plugin (what a training run imports) and the ``facd-*`` tools only.
"""
