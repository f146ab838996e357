"""The training log line of runs of our models: BasicSR's, with an ETA that ends at 0:00:00 (issue 29, noise)."""
import logging
import time

import basicsr.train
import pytest
from basicsr.utils import MessageLogger

import facd_basicsr  # noqa: F401
from facd_basicsr.host.message_logger import FinalEtaMessageLogger
from facd_basicsr.host.run_guards import install_run_guards

from model_helpers import basicsr_log_messages

OPT = {'name': 'eta_check', 'logger': {'print_freq': 1, 'use_tb_logger': False}, 'train': {'total_iter': 10}}


@pytest.fixture
def lines():
    with basicsr_log_messages(logging.INFO) as messages:  # INFO: what a run's log file sets up
        yield messages


def log_line(cls, current_iter, lines, seconds_per_iter=2.5):
    """The line ``cls`` logs at ``current_iter`` of 10, as if every iteration since 1 took ``seconds_per_iter``."""
    logger = cls(OPT, start_iter=1)
    logger.start_time = time.time() - seconds_per_iter * current_iter
    logger({'epoch': 0, 'iter': current_iter, 'lrs': [1e-4], 'time': seconds_per_iter, 'data_time': 0.01})
    return lines.pop()


def test_the_last_iteration_reads_eta_zero_where_stock_reads_minus_one_day(lines):
    assert 'eta: -1 day, 23:59:5' in log_line(MessageLogger, 10, lines)  # the stock line this replaces
    assert '[eta: 0:00:00, time (data): 2.500 (0.010)]' in log_line(FinalEtaMessageLogger, 10, lines)


def test_other_iterations_log_as_stock_does(lines):
    for current_iter in (1, 5, 9):
        ours, stock = log_line(FinalEtaMessageLogger, current_iter, lines), log_line(MessageLogger, current_iter, lines)
        assert ours.split('eta: ')[1][:4] == stock.split('eta: ')[1][:4] and ours.split('eta:')[0] == stock.split(
            'eta:')[0]


def test_a_run_of_our_models_logs_through_it(monkeypatch):
    monkeypatch.setattr(basicsr.train, 'MessageLogger', MessageLogger)
    monkeypatch.setattr(basicsr.train, 'load_resume_state', basicsr.train.load_resume_state)
    install_run_guards()
    assert basicsr.train.MessageLogger is FinalEtaMessageLogger
