"""Installs m3bert_tf with the dependency set it was checked against."""

import re

from setuptools import find_packages, setup

with open("m3bert_tf/__init__.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="m3bert_tf",
    version=version,
    description="M3BERT: a transformer encoder for music audio, in TensorFlow/Keras",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["m3bert_tf", "m3bert_tf.*"]),
    scripts=["bin/extract", "bin/pretrain", "bin/finetune", "bin/demo"],
    python_requires=">=3.10",
    # Pinned together: only this set was checked to work (tensorflow-io's
    # native ops load only with TensorFlow 2.16/2.17).
    install_requires=[
        "tensorflow==2.17.1",
        "keras==3.15.1",
        "tensorflow-io==0.37.1",
        "numpy==1.26.4",
        "librosa==0.11.0",
        "tensorboard==2.17.1",
        "absl-py",
        "soundfile>=0.12",  # libsndfile >= 1.1 decodes mp3
        "soxr>=0.3",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff==0.17.6"],
        # benchmarks/pretrain_bench.py's PyTorch twin (the CPU wheel).
        "bench": ["torch==2.13.0"],
    },
)
