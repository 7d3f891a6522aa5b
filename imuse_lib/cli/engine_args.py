"""The `--engine` options shared by `imuse features`, `imuse index add` and `imuse train`
(issue 11). Parsing only: nothing here imports Ray (imuse_lib.engine does, when asked)."""

from __future__ import annotations

from . import bounded_int, plain_text


def add_engine_args(p, what: str, workers: bool = True) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help=f"engine for {what}: local (default: this machine) or ray (a Ray cluster; "
                        f"needs `pip install .[scale]`)")
    p.add_argument("--ray-address", type=plain_text("ray-address"), default=None, metavar="ADDR",
                   help="the Ray cluster to use, e.g. ray://head:10001 (default: $RAY_ADDRESS, else a local "
                        "Ray started and stopped with the command)")
    if workers:
        p.add_argument("--workers", type=bounded_int(1, 4096, "workers"), default=2,
                       help="Ray actors holding the backbone, 1..4096 (default 2; one GPU each where the "
                            "cluster has GPUs)")


def check_engine_args(args) -> None:
    """--ray-address and --workers mean something with --engine ray only: say so."""
    from ..errors import ImuseError

    if args.engine != "ray" and (args.ray_address or getattr(args, "workers", 2) != 2):
        raise ImuseError("--ray-address and --workers go with --engine ray")
