"""What flows in first: datasets into one pixel store, patient-wise splits and folds, the harness's
augmentation, and the batches (with their digests) that every worker receives alike."""
