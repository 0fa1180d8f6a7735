"""The Results view of windows-batch-compute-dag: a FastAPI app on Airflow's API server.

Engine, not study: it knows where a run's results are (the `--input`/`--output`/`--expected-tasks`
of the aggregate command the DAG planned, stored in XCom) and which files a run publishes
(results.png, results.csv, results.json). What the table shows comes from results.json itself:
its rows' keys are the columns, in the study's order.
"""
