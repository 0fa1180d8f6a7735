"""The Results view of the engine's study DAGs: a FastAPI app on Airflow's API server.

Engine, not study: it knows where a run's files are (plan_tasks' record, believed only within
the deployment's bucket and the study's own prefix), how the task runner records progress, and
that a study may publish a table (results.json with rows) and a plot (a PNG). What the table
shows comes from results.json itself: its rows' keys are the columns, in the study's order.
"""
