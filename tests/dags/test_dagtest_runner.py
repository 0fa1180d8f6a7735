"""The dag.test() runner reports a refused form as an outcome and lets any other failure through."""

from __future__ import annotations

import pytest

from .conftest import RunDag

pytestmark = pytest.mark.airflow


def test_a_crash_fails_loudly_with_its_traceback(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    with pytest.raises(AssertionError, match=r"(?s)Traceback.*ValueError.*not-a-date"):
        run_dag(
            airflow_env,
            {"num_tasks": 3},
            logical_date="not-a-date",
            dag_id="windows-batch-compute-dag",
        )
