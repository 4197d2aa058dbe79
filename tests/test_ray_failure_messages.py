"""What an attempt's record says when Ray, not the worker, ended it: a lost actor is named as lost,
and any other error as what it was, so a full disk is not reported as a dead node."""

from __future__ import annotations

from ray.exceptions import ActorDiedError, OutOfDiskError, RayTaskError

from harness.cluster.ray_executor import _ray_failure


def test_a_full_disk_is_named_with_its_remedy_not_as_a_lost_actor():
    cause = OutOfDiskError("Local disk is full")
    error = RayTaskError("RunActor.run", "Traceback ...", cause).as_instanceof_cause()
    message = _ray_failure(error, cause)
    assert "raised OutOfDiskError" in message
    assert "actor was lost" not in message
    assert "RAY_local_fs_capacity_threshold" in message


def test_a_dead_actor_is_named_as_lost():
    error = ActorDiedError()
    message = _ray_failure(error, error)
    assert message.startswith("ActorDiedError: the run's actor was lost (its node or process died)")
