"""The DAG's own triggers: here, in the plugins folder, because Airflow puts the plugins folder on
every component's sys.path (airflow/settings.py `prepare_syspath_for_config_and_plugins`), the
triggerer's included, and Airflow 3.3's triggerer does not put the DAG folder there
(apache/airflow#65455). On MWAA the folder is plugins.zip, which deploy.sh builds from plugins/."""
