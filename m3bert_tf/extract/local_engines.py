"""Beam's portable runner and a Dask cluster on this machine (127.0.0.1),
each in processes of its own: what the engine tests and
`benchmarks/extract_bench.py` run extraction on, and a way to try the
pipeline before a cluster.

    with portable_runner() as engine:        # a job service and an SDK worker pool
        run(ExtractConfig(..., runner="beam", beam_options=engine.beam_options))
    with dask_cluster(workers=2) as engine:  # a scheduler and 2 worker processes
        run(ExtractConfig(..., runner="dask", dask_scheduler=engine.address))

The processes are started with this Python (its first directory on PATH:
the worker pool starts SDK workers as `python`) and killed on exit.
"""

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process, seconds: float = 60.0) -> None:
    """Waits until `process` listens on `port`.

    Raises:
      RuntimeError: it exited first, or did not listen within `seconds`.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args}: exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.args}: nothing listens on port {port} after {seconds} s")


def engine_env(**extra) -> dict:
    """This environment with this Python's directory first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return {**env, **extra}


@dataclasses.dataclass
class Engine:
    """A started engine. beam_options: for runner=beam; address: the Dask
    scheduler's HOST:PORT; processes: every process started (the worker
    processes last, `workers` of them)."""

    processes: list
    beam_options: str = ""
    address: str = ""
    workers: int = 0

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes[len(self.processes) - self.workers :]]


@contextlib.contextmanager
def _started():
    processes: list = []
    try:
        yield processes
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def _start(processes, *argv, env=None, log=None):
    p = subprocess.Popen(
        [sys.executable, *argv], env=env or engine_env(),
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    processes.append(p)
    return p


@contextlib.contextmanager
def portable_runner(log=None):
    """Beam's reference job service (it runs each job with one SDK worker)
    and an external SDK worker pool, each a process; yields the Engine whose
    `beam_options` select them (`--environment_type=EXTERNAL`). `log`: a file
    for the pool's output (the SDK workers it starts say so there)."""
    job_port, pool_port = free_port(), free_port()
    with _started() as processes:
        job_service = _start(
            processes, "-m", "apache_beam.runners.portability.local_job_service_main",
            f"--port={job_port}",
        )  # fmt: skip
        pool = _start(
            processes, "-m", "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={pool_port}", log=log,
        )  # fmt: skip
        wait_for_port(job_port, job_service)
        wait_for_port(pool_port, pool)
        options = (
            f"--runner=PortableRunner --job_endpoint=localhost:{job_port} "
            f"--environment_type=EXTERNAL --environment_config=localhost:{pool_port}"
        )
        yield Engine(processes, beam_options=options, workers=1)


@contextlib.contextmanager
def dask_cluster(workers: int = 2, log=None, **scheduler_env):
    """A Dask scheduler and `workers` worker processes of one thread each
    (no nanny: a killed worker stays dead), all on 127.0.0.1; yields the
    Engine once every worker has joined. `log`: a file for the workers'
    output; `scheduler_env`: environment variables of the
    scheduler (e.g. DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")."""
    port = free_port()
    with _started() as processes:
        scheduler = _start(
            processes, "-m", "distributed.cli.dask_scheduler", "--host=127.0.0.1",
            f"--port={port}", "--dashboard-address=:0", env=engine_env(**scheduler_env),
        )  # fmt: skip
        wait_for_port(port, scheduler)
        for _ in range(workers):
            _start(
                processes, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                "--nthreads=1", "--no-nanny", "--host=127.0.0.1", "--dashboard-address=:0",
                log=log,
            )  # fmt: skip
        from dask.distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield Engine(processes, address=f"127.0.0.1:{port}", workers=workers)
