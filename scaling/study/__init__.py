"""The study service: spec -> plan -> Ray Tune trials -> MLflow tracking + Parquet store."""
