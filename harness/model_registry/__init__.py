"""Trained models kept in an MLflow Model Registry: registered from a run directory, resolved by reference."""
