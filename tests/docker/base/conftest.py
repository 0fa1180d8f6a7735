"""The task runner's tests also use the engine's manifest writer: dags/ on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[3] / "dags"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))
