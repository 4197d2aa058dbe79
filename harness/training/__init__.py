"""Training driven by the harness: the per-epoch loop, the schedule decided from validation loss
(learning rate, checkpoint, early stop) and the parity probe run before every benchmark."""
