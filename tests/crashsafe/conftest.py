"""Make the reconcile and runtime test helpers importable here (tests are not a package)."""

import pathlib
import sys

_TESTS = pathlib.Path(__file__).resolve().parents[1]
for sub in ("reconcile", "runtime"):
    if str(_TESTS / sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / sub))
