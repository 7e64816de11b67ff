# The README's commands. Each one creates/refreshes the virtual environment
# at .venv first, so they work on a fresh machine with Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tensorflow-io line (pip install '.[tfio]': TensorFlow 2.17.1, whose
# native ops tensorflow-io needs), in its own environment beside .venv.
TFIO_VENV := .venv-tfio
TFIO_STAMP := $(TFIO_VENV)/.installed
# Its smoke set: storage (s3:// registered), jobs on s3:// against a local S3
# server (moto), a file:// extraction and four
# pretraining steps, the SavedModels exported by both lines, the kernel cache,
# features within float16 rounding of the numpy 1.26.4 fixture.
TFIO_SMOKE := tests/test_storage.py tests/test_old_exports.py tests/test_kernels.py \
	tests/test_tfio_line.py tests/test_distributed.py::test_extraction_and_training_take_file_urls \
	tests/test_features.py::test_features_equal_those_of_the_numpy_1_26_stack

.PHONY: install demo test test-engines test-tfio lint bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# PYTHONWARNINGS: setuptools warns about every editable install; nothing to act on.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e '.[test]'
	@echo "compiling librosa's numba kernels once for this environment (m3bert_tf.features.kernels)"
	$(BIN)/python -c "from m3bert_tf.features.kernels import ensure_compiled; ensure_compiled()"
	touch $(STAMP)

install: $(STAMP)

$(TFIO_STAMP): setup.py pyproject.toml
	test -x $(TFIO_VENV)/bin/python || $(PYTHON) -m venv $(TFIO_VENV)
	$(TFIO_VENV)/bin/python -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore $(TFIO_VENV)/bin/python -m pip install -q -e '.[tfio]' 'pytest>=8' 'moto[server]==5.2.5'
	$(TFIO_VENV)/bin/python -m pip check
	$(TFIO_VENV)/bin/python -c "from m3bert_tf.features.kernels import ensure_compiled; ensure_compiled()"
	touch $(TFIO_STAMP)

demo: $(STAMP)
	$(BIN)/python bin/demo --flagfile=configs/tiny.flags --workdir=demo_output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The engine tests (Beam's portable runner, Dask; clusters started on
# 127.0.0.1, about 2 minutes) run in their own target: CI runs both.
test: lint
	$(BIN)/python -m pytest -q -ra --durations=12 -m "not engines"

test-engines: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m engines

test-tfio: $(TFIO_STAMP)
	$(TFIO_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider $(TFIO_SMOKE)

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	$(BIN)/python benchmarks/extract_bench.py --output=benchmarks/results/extract.json
	$(BIN)/python benchmarks/resume_bench.py --output=benchmarks/results/resume.json
	$(BIN)/python benchmarks/pretrain_bench.py --output=benchmarks/results/pretrain.json
	$(BIN)/python benchmarks/block_bench.py --output=benchmarks/results/block.json
	$(BIN)/python benchmarks/finetune_bench.py --output=benchmarks/results/finetune.json
	$(BIN)/python benchmarks/embed_bench.py --output=benchmarks/results/embed.json
	$(BIN)/python benchmarks/long_audio_bench.py --output=benchmarks/results/long_audio.json
	$(BIN)/python benchmarks/evaluate_bench.py --output=benchmarks/results/evaluate.json
	$(BIN)/python benchmarks/distributed_bench.py --output=benchmarks/results/distributed.json
	@# The LiteRT files against the SavedModel need the demo's export, corpus and shards.
	test -d demo_output/export || $(MAKE) demo
	$(BIN)/python benchmarks/litert_bench.py --output=benchmarks/results/litert.json

clean:
	rm -rf demo_output .pytest_cache build *.egg-info
