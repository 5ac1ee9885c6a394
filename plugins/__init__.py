"""The Airflow plugin of maggy-airflow."""
