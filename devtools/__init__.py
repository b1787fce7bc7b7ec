"""Tools for a developer's machine: throwaway servers, `make up`'s launcher and `make demo`.

Nothing in the service imports this package (an import-linter contract in
pyproject.toml says so), and the Docker image leaves it out: the servers it
starts come from pip packages that a deployment never needs.
"""

from pathlib import Path

#: The checkout: the Procfile, manage.py and ./var live here.
ROOT = Path(__file__).resolve().parent.parent
#: Where the demo, the benchmarks and the tests keep servers' data and logs.
VAR = ROOT / "var"
