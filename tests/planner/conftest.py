import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# The independent reference optimum lives with the benchmark that reports against it
# (benchmarks/reference_optimum.py); the tests import it, the benchmark imports no test code.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
