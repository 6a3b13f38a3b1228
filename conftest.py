"""Root conftest: wires the report plugin and the trained-model fixtures into every pytest run.

`core.pytest_plugin` adds the options (--reports-dir, --data-dir, --cache-dir, --allow-download),
skips gpu cases without CUDA, collects one record per (claim, tier, case) and writes the reports.
`fixtures.pytest_fixtures` provides the session-scoped train-or-load fixtures of the tiers.
"""
import time

import pytest

from core.numerics import pin_code_paths

# Before torch runs a kernel: MKL and ATen fix their code path at first use (reports/code-paths.md).
# A value the user exported (e.g. MKL_CBWR=AVX2) is respected and recorded in the report header.
pin_code_paths()

pytest_plugins = ["core.pytest_plugin", "fixtures.pytest_fixtures"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    # Start of the test body: the harness reports wall time from here (session fixtures that train
    # models are timed by the fixture build summary instead).
    item._claims_t0 = time.perf_counter()
