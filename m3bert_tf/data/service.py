"""tf.data service servers for the pretraining pipeline (bin/data_service).

    dispatcher = start_dispatcher(port=5050)
    worker = start_worker("dispatcher-host:5050", port=5051)
    # bin/pretrain --data_service=grpc://dispatcher-host:5050 ...

Workers run the pipeline's TensorFlow graph (read, parse, crop, mask, batch)
and need only TensorFlow and read access to the shards (a shared file
system, or gs:// etc.); our package is not imported there.
"""

import dataclasses

import tensorflow as tf

from m3bert_tf.fields import check_choices

_SERVICE = tf.data.experimental.service
MODES = ("dispatcher", "worker")

# TensorFlow's data servers bind "0.0.0.0:<port>" (GrpcDataServerBase::Start)
# and take no address: these are the only --bind_address values they keep.
ALL_INTERFACES = ("0.0.0.0", "::", "[::]")
EXPOSURE = (
    "a tf.data service server always listens on every interface of this host "
    "(TensorFlow has no setting for one address) with unauthenticated gRPC: anyone "
    "who reaches its port can read the training data through it and run work on it"
)


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """One tf.data service server (bin/data_service).

    Attributes:
      mode: which server to run: dispatcher or worker.
      port: the port to listen on (0 = any free port, printed).
      bind_address: the interfaces to listen on. TensorFlow's tf.data servers
        always listen on every interface (0.0.0.0) with unauthenticated gRPC,
        so the default refuses to start: give 0.0.0.0 on a private network or
        behind a firewall.
      dispatcher: mode=worker: the dispatcher's host:port.
      worker_address: mode=worker: how trainers reach this worker
        (host:%port%); default localhost.
      work_dir: mode=dispatcher: where it journals its state (restartable).
      fault_tolerant: mode=dispatcher: journal every change before acting
        (needs work_dir).
    """

    mode: str = dataclasses.field(metadata={"choices": MODES})
    port: int = 0
    bind_address: str = "127.0.0.1"
    dispatcher: str = ""
    worker_address: str = ""
    work_dir: str = ""
    fault_tolerant: bool = False

    def __post_init__(self):
        check_choices(self)
        if self.bind_address not in ALL_INTERFACES:
            raise ValueError(
                f"bind_address={self.bind_address}: {EXPOSURE}; start it with "
                "bind_address=0.0.0.0 only where the port is reachable from trusted hosts alone"
            )
        if self.mode == "worker" and not self.dispatcher:
            raise ValueError("mode=worker needs dispatcher=<host>:<port>")


def start(config: ServiceConfig) -> tuple:
    """(the started server, a line saying what and where it is)."""
    if config.mode == "dispatcher":
        server = start_dispatcher(config.port, config.work_dir, config.fault_tolerant)
        return server, f"dispatcher at grpc://<this host>:{server_port(server)}"
    server = start_worker(config.dispatcher, config.port, config.worker_address)
    return server, (
        f"worker on port {server_port(server)} serving the dispatcher {config.dispatcher}"
    )


def start_dispatcher(
    port: int = 0, work_dir: str = "", fault_tolerant: bool = False
) -> _SERVICE.DispatchServer:
    """Starts a dispatcher (port 0: any free port; its `target` says which).

    Args:
      work_dir: where the dispatcher journals its state, so that a restarted
        dispatcher recovers its jobs (required with `fault_tolerant`).
      fault_tolerant: journal every state change before acting on it.

    Raises:
      ValueError: `fault_tolerant` without `work_dir`.
      OSError: `port` is in use (`check_port_free`).
    """
    if fault_tolerant and not work_dir:
        raise ValueError("fault_tolerant needs work_dir (where the dispatcher journals)")
    check_port_free(port, "dispatcher")
    config = _SERVICE.DispatcherConfig(
        port=port, work_dir=work_dir or None, fault_tolerant_mode=fault_tolerant
    )
    return _SERVICE.DispatchServer(config)


def start_worker(
    dispatcher: str, port: int = 0, worker_address: str = ""
) -> _SERVICE.WorkerServer:
    """Starts a worker that registers with `dispatcher` ("host:port", with or
    without grpc://).

    Args:
      worker_address: how clients reach this worker ("host:%port%"; default
        localhost: give the host's name when clients run elsewhere).
    """
    from m3bert_tf.io import storage

    # It reads the shards the job names: s3:// and hdfs:// too where the
    # tensorflow-io line is installed.
    storage.load_optional_filesystems()
    check_port_free(port, "worker")
    address = dispatcher.split("://", 1)[-1]
    config = _SERVICE.WorkerConfig(
        dispatcher_address=address, port=port, worker_address=worker_address or None
    )
    return _SERVICE.WorkerServer(config)


def check_port_free(port: int, what: str) -> None:
    """Raises OSError (EADDRINUSE) naming the port when something listens on
    it. TensorFlow's gRPC servers set SO_REUSEPORT, so a second dispatcher on
    a port in use would start and share it, half the clients reaching each;
    a plain bind without that option is refused where anything listens."""
    import errno
    import socket

    if not port:
        return
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        with probe:
            try:
                probe.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise OSError(
                        errno.EADDRINUSE,
                        f"port {port} is in use (another {what} or program listens "
                        "there): stop it or choose another --port",
                    ) from None
                if family == socket.AF_INET:
                    raise


def server_port(server) -> int:
    """The port a started dispatcher or worker listens on."""
    if isinstance(server, _SERVICE.DispatchServer):
        return int(server.target.rsplit(":", 1)[1])
    return int(server._address.rsplit(":", 1)[1])  # noqa: SLF001 (no public getter)
