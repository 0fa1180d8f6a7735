"""Helpers of windows-batch-compute-dag: settings, trigger form, planning, backends (ECS, local).

Kept out of DAG parsing by dags/.airflowignore; MWAA puts dags/ on sys.path, so
`import windows_batch` works there as it does locally.
"""
