"""What a run leaves behind: the run directory `results/<run-id>/` and the provenance recorded in it."""
