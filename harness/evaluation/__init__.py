"""Every number computed from logits, in one place: metrics, the patient bootstrap, the verdicts
between workers against training and test-set noise, churn, time to target and the summary over
runs. Pure arithmetic on arrays: this package imports nothing else from the harness."""
