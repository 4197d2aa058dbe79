"""What each run of a study reserves on a Ray cluster, from the nodes' resources and --placement.

Plain arithmetic on `ray.nodes()`'s resources, so it is tested without a cluster. A run reserves one
GPU and `--cpus-per-run` CPUs; on a cluster without GPUs, or with `--device cpu`, its CPUs are what it
computes on, so its worker's `--threads` must fit in them; `exclusive` reserves a whole node;
`grouped` needs a node that holds one (seed, fold)'s workers at once.
"""

from __future__ import annotations

from harness.cluster.settings import ClusterRefused, ClusterSettings


def reservation_per_run(per_node: list[dict], settings: ClusterSettings, workers: int) -> dict[str, float]:
    """The resources each run's actor asks Ray for; ClusterRefused when the cluster cannot place the
    runs as `settings` asks (`per_node`: each alive node's resources, {"GPU": 2.0, "CPU": 16.0, ...})."""
    node_gpus = [int(resources.get("GPU", 0)) for resources in per_node]
    node_cpus = [int(resources.get("CPU", 0)) for resources in per_node]
    use_gpus = any(node_gpus)
    if settings.placement == "exclusive":
        counts = node_gpus if use_gpus else node_cpus
        if len(set(counts)) > 1:
            raise ClusterRefused(f"--placement exclusive: the nodes have different numbers of "
                                 f"{'GPUs' if use_gpus else 'CPUs'} ({counts}); a run reserving a whole node "
                                 "needs equal nodes")
        return {"GPU": float(counts[0]), "CPU": float(settings.cpus_per_run)} if use_gpus \
            else {"CPU": float(counts[0])}
    threads, cpus = settings.threads, settings.cpus_per_run
    if (not use_gpus or settings.device == "cpu") and not 0 < threads <= cpus:
        # A worker computing on the CPU takes every core unless told otherwise: runs packed by their
        # reservation would then fight over the cores, and each would time the others.
        why = "the cluster has no GPUs" if not use_gpus else "the workers compute on the CPU (--device cpu)"
        raise ClusterRefused(f"ray: {why}, so each run computes on the --cpus-per-run {cpus} CPU(s) it reserves: "
                             f"give --threads N with N at most {cpus} (now "
                             f"{threads or 'the framework default: every core'}), or --placement exclusive")
    reservation = {"GPU": 1.0, "CPU": float(cpus)} if use_gpus else {"CPU": float(cpus)}
    if settings.placement == "grouped" and not any(
            all(node.get(kind, 0) >= amount * workers for kind, amount in reservation.items()) for node in per_node):
        needed = ", ".join(f"{amount * workers:g} {kind}" for kind, amount in reservation.items())
        raise ClusterRefused(f"--placement grouped: the {workers} workers of one seed and fold need {needed} "
                             "on one node, and no node has that")
    return reservation
