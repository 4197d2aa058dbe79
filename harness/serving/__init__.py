"""Serving registered models: one worker process per loaded model, shared by every caller.

`reading` holds what a model answers for a batch of images (`Reading`) and how logits become
probabilities, flags and class activation maps; `served_model` keeps one model's worker (started on
first use, one request at a time, restarted after a failure); `pool` holds one served model per
registered version, unloads idle ones and stops every worker on exit; `predictions` writes the
table and CSV of `harness predict`, whose parser and handler are in `command`.
"""
