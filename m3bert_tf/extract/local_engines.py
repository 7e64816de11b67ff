"""Beam's portable runner and a Dask cluster on this machine (127.0.0.1),
each in processes of its own: what the engine tests and
`benchmarks/extract_bench.py` run extraction on, and a way to try the
pipeline before a cluster.

    with portable_runner(workers=2) as engine:   # a job service and an SDK worker pool
        run(ExtractConfig(..., runner="beam", beam_options=engine.beam_options))
    with dask_cluster(workers=2) as engine:      # a scheduler and 2 worker processes
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
def portable_runner(workers: int = 2, log=None):
    """Beam's reference job service and an external SDK worker pool, each a
    process; yields the Engine whose `beam_options` select them
    (`--environment_type=EXTERNAL`) with `workers` SDK worker processes a
    job. `log`: a file for the pool's output (it says when it starts a
    worker)."""
    job_port, pool_port = free_port(), free_port()
    with _started() as processes:
        job_service = _start(
            processes, "-m", "m3bert_tf.extract.local_engines", "job_service",
            str(job_port),
        )  # fmt: skip
        pool = _start(
            processes, "-m", "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={pool_port}", log=log,
        )  # fmt: skip
        wait_for_port(job_port, job_service)
        wait_for_port(pool_port, pool)
        options = (
            f"--runner=PortableRunner --job_endpoint=localhost:{job_port} "
            f"--environment_type=EXTERNAL --environment_config=localhost:{pool_port} "
            f"--direct_num_workers={workers}"
        )
        yield Engine(processes, beam_options=options)


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


def serve_jobs(port: int) -> None:
    """Beam's reference job service (`local_job_service_main`'s) on `port`,
    with one change: a job runs on as many SDK workers as its
    `--direct_num_workers` asks (the reference service runs every job on one,
    which Flink or Dataflow would not). Serves until killed."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class Job(local_job_service.BeamJob):
        def _invoke_runner(self):
            self.set_state(beam_job_api_pb2.JobState.RUNNING)
            runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
            options = self.pipeline_options()
            # The attribute FnApiRunner.run_pipeline sets from the same option.
            asked = int(
                options.view_as(DirectOptions).direct_num_workers or 0
            )  # may be text
            runner._num_workers = asked or os.cpu_count() or 1
            return runner.run_via_runner_api(self._pipeline_proto, options)

    servicer = local_job_service.LocalJobServicer(beam_job_type=Job)
    servicer.start_grpc_server(port)
    while True:
        time.sleep(3600)


if __name__ == "__main__" and sys.argv[1:2] == ["job_service"]:
    serve_jobs(int(sys.argv[2]))
