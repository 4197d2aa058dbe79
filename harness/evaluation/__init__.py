"""Every number computed from logits, in one place: metrics, the patient bootstrap, DeLong's test,
the comparison between workers, and the summary over runs. Pure arithmetic on arrays: this package
imports nothing else from the harness."""
