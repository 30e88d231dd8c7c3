"""The process pool of the data stages (to_coco encodes masks, validate decodes images in it).

A pool pays off only when the work would take longer than the ~0.5 s a fresh worker server needs to start;
each caller estimates its work and asks ``worth_a_pool``. Results never depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os

POOL_MIN_SECONDS = 1.0  # estimated sequential seconds below which the work runs in this process


def cpu_workers() -> int:
    """The cores this process may use (its CPU affinity where the OS tells, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int) -> int:
    """A ``workers`` param: 0 means one per core."""
    return workers or cpu_workers()


def worth_a_pool(workers: int, seconds: float) -> bool:
    return workers > 1 and seconds >= POOL_MIN_SECONDS


@contextlib.contextmanager
def process_pool(workers: int, initializer=None, preload: tuple[str, ...] = ()):
    """A process pool (a context manager) whose workers start from a clean server process ("forkserver"), not
    from a fork of this one: forking a process in which OpenCV (or torch, or any library) already started
    threads can deadlock the children. The server imports ``preload`` (the caller's module first) once, so
    workers start fast. Done, the workers are let finish and joined (``Pool.__exit__`` would kill them, which
    leaves their semaphores for Python to warn about at exit); on an error they are stopped at once."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
    else:
        context = multiprocessing.get_context("spawn")
    pool = context.Pool(workers, initializer=initializer)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()
