"""The engine's own code the deployer reads (dags/windows_batch/): the studies catalog, the
capacity rule and the cost model, so the deployer, the DAGs and the Results view agree on every
study and on what the warm pool bills.

MWAA puts dags/ on sys.path for the DAGs; the deployer does the same here.
"""

from __future__ import annotations

import sys
from pathlib import Path

_DAGS = str(Path(__file__).resolve().parents[1] / "dags")
if _DAGS not in sys.path:
    sys.path.insert(0, _DAGS)

from windows_batch import capacity, catalog, cost  # noqa: E402

__all__ = ["capacity", "catalog", "cost"]
