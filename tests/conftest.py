"""Make the helpers at the top of tests/ (cli_process) importable from every test folder (tests
are not a package), and make the property tests reproducible.

Hypothesis draws its examples from a fixed seed per test (``derandomize``) unless
``GPU_SHARING_HYPOTHESIS=explore`` is set: the suite then gives the same answer on every
machine and in CI (a fresh clone has no example database), while a developer hunting for new
counterexamples runs ``GPU_SHARING_HYPOTHESIS=explore pytest tests/planner`` and adds what it
finds as a plain test."""

import os
import pathlib
import sys

from hypothesis import settings

_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

settings.register_profile("reproducible", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("explore" if os.environ.get("GPU_SHARING_HYPOTHESIS") == "explore" else "reproducible")
