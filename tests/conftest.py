"""Test isolation for console scripts run in this process.

Hydra's ``@hydra.main`` (w2v2-pretrain, w2v2-finetune) adds a stream handler to the root logger
bound to the ``sys.stderr`` of that moment, which in a test is pytest's capture stream, closed when
the test ends; a warning a later test logs would then print "--- Logging error ---". A real
process runs one command, so this only concerns the tests: each test leaves the root logger's
handlers as it found them.
"""

from __future__ import annotations

import logging

import pytest


def pytest_configure(config):  # tests/test_cuda.py: `pytest -m cuda` runs the GPU path, skipped without CUDA
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); scripts/gpu_check.sh")


@pytest.fixture(autouse=True)
def _root_log_handlers_restored():
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        if not type(handler).__module__.startswith("_pytest"):  # pytest removes its own
            root.removeHandler(handler)
