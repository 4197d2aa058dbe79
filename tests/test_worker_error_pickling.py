"""A worker's failure reaches the study's driver whole when its run ran on another Ray node.

Ray pickles a task's exception; pickle rebuilds an exception from its `args`, which for WorkerError
are the one formatted message, not the four fields its __init__ takes. Unfixed, the driver got an
UnserializableException holding only the traceback text, and could not tell a lost worker
(UNAVAILABLE: redo the run) from a refused request.
"""

from __future__ import annotations

import json
import pickle

import pytest

from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.image_decode import BadImage
from harness.preflight import PreflightRefused
from harness.runtime.client import WorkerError
from harness.training.loop import BatchMismatch
from ray_cluster import run_in_loopback_cluster


def test_worker_error_survives_pickling_with_all_four_fields():
    error = WorkerError("pytorch@2.14.1", "Train", "UNAVAILABLE", "Socket closed")
    error.add_note("seed 1, fold 2")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is WorkerError
    assert (copy.worker, copy.rpc, copy.code, copy.details) == ("pytorch@2.14.1", "Train", "UNAVAILABLE",
                                                                "Socket closed")
    assert str(copy) == "worker 'pytorch@2.14.1', Train: UNAVAILABLE: Socket closed"
    assert copy.__notes__ == ["seed 1, fold 2"]


@pytest.mark.parametrize("error", [BatchMismatch("batch 3: digest differs"), DatasetError("row 5: bad label"),
                                   PreflightRefused("devices differ"), BadImage("truncated PNG")],
                         ids=lambda error: type(error).__name__)
def test_harness_errors_a_run_can_raise_survive_pickling(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)


# Run inside the cluster: a task that raises a WorkerError, and what the driver caught, as JSON.
RAISE_ON_A_NODE = r'''
import json, sys
import ray
from ray.exceptions import RayTaskError
from harness.runtime.client import WorkerError

ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_gpus=1)
def lose_the_worker():
    raise WorkerError("tensorflow", "Predict", "UNAVAILABLE", "Connection reset by peer")

try:
    ray.get(lose_the_worker.remote(), timeout=120)
    caught = {"raised": False}
except Exception as error:
    cause = getattr(error, "cause", None)
    fields = [cause.worker, cause.rpc, cause.code, cause.details] if isinstance(cause, WorkerError) else None
    caught = {"raised": True, "type": type(error).__name__, "is_task_error": isinstance(error, RayTaskError),
              "is_worker_error": isinstance(error, WorkerError), "cause_type": type(cause).__name__,
              "fields": fields, "cause_message": str(cause)}
open(sys.argv[1], "w").write(json.dumps(caught))
'''


@pytest.mark.cluster
@pytest.mark.xdist_group("cluster")
def test_worker_error_raised_on_a_ray_node_reaches_the_driver_with_its_fields(tmp_path):
    (tmp_path / "raise.py").write_text(RAISE_ON_A_NODE)
    done = run_in_loopback_cluster(tmp_path / "raise.py", [str(tmp_path / "caught.json")], timeout=240)
    assert done.returncode == 0, done.stderr
    caught = json.loads((tmp_path / "caught.json").read_text())
    # Ray raises a RayTaskError that is also the cause's class, so `except WorkerError` catches it.
    assert caught["raised"] and caught["is_task_error"] and caught["is_worker_error"], caught
    assert caught["type"] == "RayTaskError(WorkerError)"
    assert caught["cause_type"] == "WorkerError"
    assert caught["fields"] == ["tensorflow", "Predict", "UNAVAILABLE", "Connection reset by peer"]
    assert caught["cause_message"] == "worker 'tensorflow', Predict: UNAVAILABLE: Connection reset by peer"


def test_a_failed_attempt_survives_pickling_with_its_log():
    from harness.cluster.ray_executor import RunAttemptFailed

    error = RunAttemptFailed("WorkerError: lost", True, b"last lines\n", "/tmp/cxrbench-run-x/worker.log")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.retryable, copy.log, copy.log_path) == (
        "WorkerError: lost", True, b"last lines\n", "/tmp/cxrbench-run-x/worker.log")
