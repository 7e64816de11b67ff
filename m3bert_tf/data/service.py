"""tf.data service servers for the pretraining pipeline (bin/data_service).

    dispatcher = start_dispatcher(port=5050)
    worker = start_worker("dispatcher-host:5050", port=5051)
    # bin/pretrain --data_service=grpc://dispatcher-host:5050 ...

Workers run the pipeline's TensorFlow graph (read, parse, crop, mask, batch)
and need only TensorFlow and read access to the shards (a shared file
system, or gs:// etc.); our package is not imported there.
"""

import tensorflow as tf

_SERVICE = tf.data.experimental.service

# TensorFlow's data servers bind "0.0.0.0:<port>" (GrpcDataServerBase::Start)
# and take no address: these are the only --bind_address values they keep.
ALL_INTERFACES = ("0.0.0.0", "::", "[::]")
EXPOSURE = (
    "a tf.data service server always listens on every interface of this host "
    "(TensorFlow has no setting for one address) with unauthenticated gRPC: anyone "
    "who reaches its port can read the training data through it and run work on it"
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
    """
    if fault_tolerant and not work_dir:
        raise ValueError("fault_tolerant needs work_dir (where the dispatcher journals)")
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
    address = dispatcher.split("://", 1)[-1]
    config = _SERVICE.WorkerConfig(
        dispatcher_address=address, port=port, worker_address=worker_address or None
    )
    return _SERVICE.WorkerServer(config)


def server_port(server) -> int:
    """The port a started dispatcher or worker listens on."""
    if isinstance(server, _SERVICE.DispatchServer):
        return int(server.target.rsplit(":", 1)[1])
    return int(server._address.rsplit(":", 1)[1])  # noqa: SLF001 (no public getter)
