"""Which runs shared a machine: what each run's timing had beside it, from where and when each ran."""

from __future__ import annotations


def neighbours(executions: dict[str, dict]) -> dict[str, list[str]]:
    """For each run key, the runs that ran on the same node (Ray's node id, else the host) while it ran.

    `executions` holds each run's "execution" record (node_id or host, started, finished: epoch seconds).
    The sequential executor's runs never overlap, so each has none.
    """
    def node(execution: dict) -> str:
        return str(execution.get("node_id") or execution.get("host"))

    found: dict[str, list[str]] = {key: [] for key in executions}
    keys = sorted(executions)
    for position, key in enumerate(keys):
        mine = executions[key]
        for other in keys[position + 1:]:
            theirs = executions[other]
            overlap = mine["started"] < theirs["finished"] and theirs["started"] < mine["finished"]
            if overlap and node(mine) == node(theirs):
                found[key].append(other)
                found[other].append(key)
    return {key: sorted(value) for key, value in found.items()}
