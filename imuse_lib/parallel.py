"""Generic Ray plumbing: a Ray session for one command, and lists of calls run as Ray tasks.

Nothing here knows what the tasks compute: :mod:`imuse_lib.engine` (embedding jobs), the
experiment grid (``experiments.run_training``) and the VA model's search
(``va_model.tune_arm``) build on it. Ray is imported only when a function here is called.

``RAY_ADDRESS`` (or ``--ray-address``) names an existing cluster; without one, :func:`session`
starts a local Ray and stops it when the command ends.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

from .config import ray_address_problem
from .errors import ImuseError

RETRIES = 3  # restarts of a killed actor / retries of a task whose worker died


def require_ray():
    try:
        import ray
    except ImportError:
        raise ImuseError("--engine ray needs Ray, which is not installed: pip install '.[scale]' "
                         "(or pip install -r requirements-scale.txt)") from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None, num_cpus: int | None = None):
    """Ray for the length of a command: the cluster at ``address`` (or ``RAY_ADDRESS``), else a
    local Ray started here and shut down at the end. A Ray already initialised by the caller
    (a notebook, a test's cluster) is used and left running."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    problem = ray_address_problem(address)  # one line now, not ray.init's minutes of retries
    if problem:
        raise ImuseError(f"cannot connect to the Ray cluster: {problem}")
    try:
        ray.init(logging_level="WARNING", log_to_driver=False, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise ImuseError(f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def runtime_env() -> dict:
    """The driver's IMUSE_* settings (data, cache, results folders) for every worker."""
    env = {k: v for k, v in os.environ.items() if k.startswith("IMUSE_")}
    return {"env_vars": env} if env else {}


def resources(ray, cpus_per_worker: float) -> dict:
    """One GPU per actor where the cluster has GPUs, else CPUs."""
    gpus = ray.cluster_resources().get("GPU", 0)
    return {"num_gpus": 1} if gpus >= 1 else {"num_cpus": cpus_per_worker}


def map_shared(fn: Callable, shared, tasks: list) -> list:
    """``[fn(shared, t) for t in tasks]`` with each call a Ray task (one CPU), results in task
    order; ``shared`` (large and read-only, e.g. the search's feature matrices) goes into the
    object store once. A task whose worker dies is retried. Call inside :func:`session`."""
    ray = require_ray()
    shared_ref = ray.put(shared)
    remote = ray.remote(fn).options(num_cpus=1, max_retries=RETRIES, runtime_env=runtime_env())
    return ray.get([remote.remote(shared_ref, t) for t in tasks])


def map_tasks(fn: Callable[[dict], dict], tasks: list[dict], use_gpu: bool = False) -> list:
    """``[fn(t) for t in tasks]`` with each call a Ray task (one CPU, or one GPU), results in
    task order. A task whose worker dies is retried (its training resumes from its checkpoint).
    Call inside :func:`session`."""
    ray = require_ray()
    remote = ray.remote(fn).options(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
                                    max_retries=RETRIES, runtime_env=runtime_env())
    refs = [remote.remote({**t, "threads": 1}) for t in tasks]
    return ray.get(refs)
