"""Airflow plugin: the Results tab on every run of the engine's study DAGs.

A FastAPI app on the API server (windows_batch_results.app) serves the run's plot, table and
files; an external view with destination `dag_run` adds the "Results" tab to the run's page,
which embeds the app's page for that run (the UI fills in {DAG_ID} and {RUN_ID}).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from windows_batch_results.app import URL_PREFIX, VIEW, create_app


class WindowsBatchResultsPlugin(AirflowPlugin):
    """The Results view (see the module docstring)."""

    name = "windows_batch_results"
    # AirflowPlugin declares these as plain class attributes; the plugin manager reads them.
    fastapi_apps = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "windows-batch results"}
    ]
    external_views = [VIEW]  # noqa: RUF012
