"""Make the supervisor fakes of tests/runtime importable here (tests are not a package)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "runtime"))
