"""Where per-clip work runs: in this process, or as Dask tasks on a local or remote cluster.

Every clip's analysis runs on one torch thread wherever it runs, so its numbers do not
depend on where it ran (float reductions split over several threads may round
differently), and parallelism comes from processes: by default a Dask `LocalCluster` with
one single-threaded worker process per core. `--scheduler tcp://host:8786` (or the
``WSPEC_SCHEDULER`` variable) sends the same tasks to an existing cluster; ``serial`` keeps
them in this process. Each task writes its result through the cache itself, so an
interrupted distributed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from wspec.errors import WspecError
from wspec.progress import track

if TYPE_CHECKING:
    import torch

SCHEDULER_ENV = "WSPEC_SCHEDULER"
SERIAL = "serial"
LOCAL = "local"


def scheduler_choice(scheduler: str | None = None) -> str:
    """The scheduler asked for: the argument, else ``$WSPEC_SCHEDULER``, else ``local``."""
    choice = scheduler or os.environ.get(SCHEDULER_ENV) or LOCAL
    if choice not in (SERIAL, LOCAL) and "://" not in choice:
        raise WspecError(
            f"unknown scheduler {choice!r}: use 'serial', 'local' or a Dask scheduler address "
            "such as tcp://host:8786."
        )
    return choice


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    """The `--scheduler` option of the commands that analyse clips."""
    parser.add_argument(
        "--scheduler",
        help="where clips are analysed: 'local' (a Dask LocalCluster, one single-threaded "
        "worker per core; the default), 'serial' (this process) or a Dask scheduler address "
        f"such as tcp://host:8786 (default: ${SCHEDULER_ENV}, else local)",
    )


@contextlib.contextmanager
def one_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run CPU work on one intra-op thread, restoring the setting afterwards (GPU work is
    unaffected). One clip's matrices are too small to split well across threads, and one
    thread makes its numbers independent of the machine's core count."""
    import torch

    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def _local_client():
    """This process's local cluster and its client, started once and closed at exit."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    atexit.register(cluster.close)
    atexit.register(client.close)
    return client


@contextlib.contextmanager
def _client(choice: str) -> Iterator:
    """A client for `choice`: the shared local one, or a connection to a remote scheduler
    held for this batch of tasks only."""
    if choice == LOCAL:
        yield _local_client()
        return
    from distributed import Client

    with Client(choice) as client:
        yield client


def run_tasks(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    *,
    scheduler: str | None = None,
    desc: str,
    unit: str,
    progress: bool = True,
) -> Iterator[Any]:
    """`fn(*job)` for every job, in completion order, with progress per finished job.

    Serial runs (or a single job) stay in this process; otherwise the jobs are Dask tasks.
    `fn` must be a module-level function so that workers can import it.
    """
    choice = scheduler_choice(scheduler)
    if choice == SERIAL or len(jobs) <= 1 or (choice == LOCAL and (os.cpu_count() or 1) == 1):
        for job in track(jobs, desc, unit=unit, enabled=progress):
            yield fn(*job)
        return
    from distributed import as_completed

    with _client(choice) as client:
        futures = [client.submit(fn, *job, pure=False) for job in jobs]
        for future in track(
            as_completed(futures), desc, total=len(futures), unit=unit, enabled=progress
        ):
            yield future.result()
