# The README's commands. Each one creates/refreshes the virtual environment
# at .venv first, so they work on a fresh machine with Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# PYTHONWARNINGS: setuptools warns about every editable install; nothing to act on.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e '.[test]'
	@echo "compiling librosa's numba kernels once for this environment (m3bert_tf.features.kernels)"
	$(BIN)/python -c "from m3bert_tf.features.frames import warm_up; warm_up()"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python bin/demo --flagfile=configs/tiny.flags --workdir=demo_output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	$(BIN)/python benchmarks/extract_bench.py --output=benchmarks/results/extract.json
	$(BIN)/python benchmarks/pretrain_bench.py --output=benchmarks/results/pretrain.json
	$(BIN)/python benchmarks/finetune_bench.py --output=benchmarks/results/finetune.json
	$(BIN)/python benchmarks/embed_bench.py --output=benchmarks/results/embed.json
	$(BIN)/python benchmarks/long_audio_bench.py --output=benchmarks/results/long_audio.json
	$(BIN)/python benchmarks/evaluate_bench.py --output=benchmarks/results/evaluate.json
	$(BIN)/python benchmarks/distributed_bench.py --output=benchmarks/results/distributed.json

clean:
	rm -rf demo_output .pytest_cache build *.egg-info
