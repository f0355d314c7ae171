"""Make the helpers at the top of tests/ (cli_process) importable from every test folder (tests are not a package)."""

import pathlib
import sys

_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
