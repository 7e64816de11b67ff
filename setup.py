"""Installs m3bert_tf with the dependency set it was checked against."""

import re

from setuptools import find_packages, setup

with open("m3bert_tf/__init__.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# bin/extract --runner=beam. Unconstrained, Beam moves protobuf to 6.x, which
# TensorFlow 2.17 cannot import: the range keeps TensorFlow's (checked by
# `pip check` in tests/test_beam.py).
BEAM = ["apache-beam[tfrecord]==2.77.0", "protobuf>=3.20.3,<5"]

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
    # Pinned together: only this set was checked to work.
    install_requires=[
        "tensorflow==2.17.1",
        "keras==3.15.1",
        # Not imported yet: it brings the s3:// and hdfs:// file systems to
        # tf.io.gfile for the multi-machine work (imported where used, never at
        # package import, and never inside an exported graph: stock TensorFlow
        # Serving cannot load its ops). Its native ops load only with
        # TensorFlow 2.16/2.17, which is why it pins TensorFlow here.
        "tensorflow-io==0.37.1",
        "numpy==1.26.4",
        "librosa==0.11.0",
        "tensorboard==2.17.1",
        "absl-py",
        "soundfile>=0.12",  # libsndfile >= 1.1 decodes mp3
        "soxr>=0.3",
        "scikit-learn>=1.3",  # every metric (m3bert_tf/metrics.py)
        "scipy>=1.10",  # ranks for the bootstrap's ROC-AUC (librosa's own dependency)
        "matplotlib>=3.8",  # bin/evaluate's and bin/correlate's plots (Agg backend, no display)
        "threadpoolctl>=3.1",  # one BLAS thread per extraction worker
        # bin/export writes TF Serving warm-up records (PredictionLog protos).
        # Pure Python; its grpcio and protobuf are TensorFlow's own; it moves no pin.
        "tensorflow-serving-api==2.17.1",
    ],
    extras_require={
        # jax: the models run under KERAS_BACKEND=jax too (tests/test_models.py);
        # 0.5.3 is the newest that keeps numpy 1.26.4 and TensorFlow's ml-dtypes.
        # hearvalidator: the HEAR 2021 validator, run by tests/test_serving.py; its
        # 2021.0.2 (the newest for Python 3.11) imports torch, whose CPU wheel
        # moves no pin.
        "test": [
            "pytest>=8",
            "ruff==0.17.6",
            "jax[cpu]==0.5.3",
            "hearvalidator==2021.0.2",
            "torch==2.13.0",
            *BEAM,
        ],  # fmt: skip
        # benchmarks/pretrain_bench.py's PyTorch twin (the CPU wheel).
        "bench": ["torch==2.13.0"],
        "beam": BEAM,
    },
)
