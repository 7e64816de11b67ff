"""Installs m3bert_tf with the dependency set it was checked against."""

import re

from setuptools import find_packages, setup

with open("m3bert_tf/version.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# The two TensorFlow lines, each checked as a whole set: the default (the
# current TensorFlow), and the one tensorflow-io still loads on (its native ops
# need TensorFlow 2.16/2.17; it brings the s3://, hdfs:// and az:// file
# systems). The core requirements admit exactly these two lines; with no extra
# pip takes the newest, the default; `[tfio]` selects the other.
DEFAULT_LINE = "2.21.0"
TFIO_LINE = "2.17.1"
BETWEEN = ",".join(f"!=2.{minor}.*" for minor in (18, 19, 20))


def either_line(package: str) -> str:
    """`package` at one of the two lines' versions and nothing between."""
    return f"{package}>={TFIO_LINE},<={DEFAULT_LINE},{BETWEEN}"


# bin/extract --runner=beam: its protobuf range meets both lines' (checked by
# `pip check` in tests/test_beam.py).
BEAM = ["apache-beam[tfrecord]==2.77.0"]
# bin/extract --runner=dask: Beam's DaskRunner and the dask.distributed client
# (the cluster's workers need the same set: pip install 'm3bert_tf[dask]').
# Pure Python; it moves no pin (`pip check` in tests/test_beam.py).
DASK = ["apache-beam[dask,tfrecord]==2.77.0", "dask==2026.11.0", "distributed==2026.11.0"]
# The LiteRT runtime for m3bert_tf.load("model.tflite") (serving/litert.py;
# bin/export --litert converts with TensorFlow's own converter). Its numpy,
# protobuf and ml_dtypes ranges admit the default line's; it moves no pin.
LITERT = ["ai-edge-litert==2.3.0"]

setup(
    name="m3bert_tf",
    version=version,
    description="M3BERT: a transformer encoder for music audio, in TensorFlow/Keras",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["m3bert_tf", "m3bert_tf.*"]),
    scripts=[
        "bin/extract",
        "bin/pretrain",
        "bin/finetune",
        "bin/export",
        "bin/embed",
        "bin/evaluate",
        "bin/correlate",
        "bin/demo",
        "bin/data_service",
    ],  # fmt: skip
    python_requires=">=3.10",
    classifiers=[
        "Programming Language :: Python :: 3",
        *(f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)),
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    # Pinned together: only these sets were checked to work (the default line
    # on Python 3.10-3.13; the tfio line on 3.10-3.12, TensorFlow 2.17.1's).
    install_requires=[
        either_line("tensorflow"),
        "keras==3.15.1",
        "numpy>=1.26.4,<2.5",  # 2.x on the default line, 1.26.4 on the tfio line
        "librosa==0.11.0",
        either_line("tensorboard"),
        "absl-py",
        "soundfile>=0.12",  # libsndfile >= 1.1 decodes mp3
        "soxr>=0.3",
        "scikit-learn>=1.3",  # every metric (m3bert_tf/tasks/metrics.py)
        "scipy>=1.10",  # ranks for the bootstrap's ROC-AUC (librosa's own dependency)
        "matplotlib>=3.8",  # bin/evaluate's and bin/correlate's plots (Agg backend, no display)
        "threadpoolctl>=3.1",  # one BLAS thread per extraction worker
        # TFRecord checksums in extraction workers, which never import TensorFlow
        # (data/wire.py); Google's, hardware CRC-32C where the CPU has it.
        "google-crc32c>=1.5",
        # bin/export writes TF Serving warm-up records (PredictionLog protos).
        # Pure Python; its grpcio and protobuf are TensorFlow's own; it moves no pin.
        either_line("tensorflow-serving-api"),
    ],
    extras_require={
        # jax: the models run under KERAS_BACKEND=jax too (tests/test_models.py).
        # hearvalidator: the HEAR 2021 validator, run by tests/test_serving.py; its
        # 2021.0.2 (the newest for Python 3.11) imports torch, whose CPU wheel
        # moves no pin.
        "test": [
            "pytest>=8",
            "packaging",  # tests/test_beam.py reads TensorFlow's protobuf range
            "ruff==0.17.6",
            "jax[cpu]==0.10.2",
            "hearvalidator==2021.0.2",
            "torch==2.13.0",
            *DASK,
            *LITERT,
        ],  # fmt: skip
        # benchmarks/pretrain_bench.py's PyTorch twin (the CPU wheel).
        "bench": ["torch==2.13.0"],
        "beam": BEAM,
        "dask": DASK,
        "litert": LITERT,
        # The tensorflow-io line: storage.py loads it for s3://, hdfs:// and az://
        # URLs. It selects TensorFlow 2.17.1 and that line's set (the core
        # requirements admit it; `pip check` is clean); Python 3.10-3.12.
        "tfio": [
            "tensorflow-io==0.37.1",
            f"tensorflow=={TFIO_LINE}",
            f"tensorboard=={TFIO_LINE}",
            f"tensorflow-serving-api=={TFIO_LINE}",
            "numpy==1.26.4",
        ],
    },
)
