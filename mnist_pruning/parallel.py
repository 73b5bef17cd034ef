"""Where a sweep's experiments run: in this process, in local worker processes, or on a Dask cluster.

Usage::

    from mnist_pruning.parallel import _sweep_executor
    with _sweep_executor(workers=2) as pool:                      # local processes, 1 torch thread each
        run_sweep(config, executor=pool)
    with _sweep_executor(scheduler="tcp://host:8786") as pool:  # an existing Dask cluster (pip install '.[dask]')
        run_sweep(config, executor=pool)

Every executor is a :class:`concurrent.futures.Executor`: :class:`_InlineExecutor` (``workers=1``: the task runs
inside ``submit``, simplest to debug), a :class:`~concurrent.futures.ProcessPoolExecutor` started with ``spawn``
(forking a process that has initialised torch's thread pools is unsafe), or Dask distributed's ``ClientExecutor``
(``Client.get_executor``); no job queue of this project's own. Tasks get only small arguments (a config, an
experiment) and return a CSV row; workers load MNIST and the baselines themselves, from paths the parent resolved.

What a Dask cluster needs:

- ``mnist_pruning`` (same version) and torch importable on every worker;
- the parent's data folder and output folder (``runs/`` or ``--out-dir``) at the **same absolute paths** on every
  worker, e.g. one shared filesystem: a worker reads MNIST and its seed's baseline checkpoint there and writes the
  experiment's dense and compact files there. Rows are returned to the parent, which alone writes the CSVs;
- workers with **one thread each** (``dask worker --nthreads 1``; add processes for more parallelism): torch's
  random generator and thread count belong to a process, so two tasks sharing one would not reproduce.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Iterator

from .checks import _check_int

__all__ = []

# Torch threads per worker process: on a 2-core machine two busy processes at 2 threads each slow each other 3-30x,
# so the pool runs one process per core at one thread each.
_WORKER_THREADS = 1
_CONNECT_TIMEOUT_S = 10.0  # how long to wait for a Dask scheduler (and a first worker) before giving up


def _available_cores() -> int:
    """Cores this process may run on (its affinity mask where the platform has one, else ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _default_workers() -> int:
    """One worker per :data:`_WORKER_THREADS` of the available cores, at least one."""
    return max(1, _available_cores() // _WORKER_THREADS)


def _check_workers(workers: object) -> int:
    """``workers`` as an int >= 1; else a ValueError naming it."""
    return _check_int(workers, "workers")


class _InlineExecutor(cf.Executor):
    """Runs each task inside ``submit`` and returns its finished future: ``--workers 1`` as an executor, so the
    sweep has one code path. A task's exception is stored in its future (as a pool would); KeyboardInterrupt
    and SystemExit propagate at once."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            future.set_exception(e)
        else:
            future.set_result(result)
        return future


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone. Pool workers block on a queue the parent no longer feeds if it was killed
    (SIGKILL runs no clean-up), and would otherwise stay behind as orphans."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    """Pool worker set-up: its torch threads, and exit with the parent."""
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _local_pool(workers: int) -> cf.ProcessPoolExecutor:
    """``workers`` spawned processes with :data:`_WORKER_THREADS` torch threads each."""
    import multiprocessing

    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(_WORKER_THREADS, os.getpid()),
    )


def _connect(address: str, timeout: float | None = None):
    """A ``distributed.Client`` for the scheduler at ``address`` with at least one worker, every worker running
    one thread; a ValueError naming the address when it cannot be reached within ``timeout`` seconds (None:
    :data:`_CONNECT_TIMEOUT_S`) or its workers do not fit (see the module docstring)."""
    timeout = _CONNECT_TIMEOUT_S if timeout is None else timeout
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"scheduler must be an address such as 'tcp://host:8786', got {address!r}")
    try:
        from distributed import Client
    except ImportError as e:
        raise ValueError(
            f"scheduler {address!r} needs Dask distributed: pip install -e '.[dask]' (or pip install distributed)"
        ) from e
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise ValueError(f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s: {e}") from e
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise ValueError(f"the Dask scheduler at {address!r} has no worker (waited {timeout:g} s)") from e
        workers = client.scheduler_info(n_workers=-1)["workers"]
        crowded = {addr: w["nthreads"] for addr, w in workers.items() if w.get("nthreads", 1) != 1}
        if crowded:
            raise ValueError(
                f"the Dask workers of {address!r} must run one thread each (start them with --nthreads 1; add "
                f"processes instead): torch's random generator and thread count are per process; found {crowded}"
            )
    except BaseException:
        client.close()
        raise
    return client


@contextlib.contextmanager
def _sweep_executor(workers: int | None = None, scheduler: str | None = None) -> Iterator[cf.Executor]:
    """The executor for ``workers`` local processes (None: :func:`_default_workers`; 1: :class:`_InlineExecutor`)
    or, with ``scheduler``, the Dask cluster at that address; shut down (pending tasks cancelled) on exit."""
    if scheduler is not None:
        client = _connect(scheduler)
        # pure=False: every submission is a run with side effects (files), never deduplicated by Dask.
        executor = client.get_executor(pure=False)
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)
            client.close()
        return
    workers = _default_workers() if workers is None else _check_workers(workers)
    if workers == 1:
        yield _InlineExecutor()
        return
    pool = _local_pool(workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
