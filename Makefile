# PathViewer developer commands. `make run` and `make test` work on a fresh Linux machine with
# Python 3.11: they create .venv with pip (pip takes torch from the local wheel cache where one
# exists; uv/poetry would download gigabytes).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test lint typecheck pytest bench bundle clean screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m pathviewer.system_deps --install
	$(BIN)/pathviewer demo

lint: $(STAMP)
	$(BIN)/ruff check --no-cache pathviewer tests benchmarks
	$(BIN)/ruff format --no-cache --check pathviewer tests benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy pathviewer

pytest: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m pathviewer.bench viewer --json out/bench-viewer.json
	$(BIN)/python -m pathviewer.bench ngsd --json out/bench-ngsd.json
	$(BIN)/python -m pathviewer.bench ngsd-realistic --seeds 3 --json out/bench-ngsd-realistic.json
	$(BIN)/python -m pathviewer.bench ngsd-realistic --quick --methods "" --k-sweep 0.05,0.1,0.2,0.3 --json out/bench-ngsd-realistic-k.json
	$(BIN)/python -m pathviewer.bench refine --json out/bench-refine.json
	$(BIN)/python -m pathviewer.bench refine-realistic --seeds 3 --json out/bench-refine-realistic.json
	$(BIN)/python -m pathviewer.bench training_ui --json out/bench-training-ui.json
	$(BIN)/python benchmarks/annotations_query.py > out/bench-annotations-query.json
	$(BIN)/python benchmarks/annotations_memory.py > out/bench-annotations-memory.json
	QT_QPA_PLATFORM=offscreen $(BIN)/python benchmarks/annotations_pan.py --seconds 12 > out/bench-annotations-pan.json

bundle: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bundle]'
	$(BIN)/python packaging/build_bundle.py

clean:
	rm -rf $(VENV) build dist out .pytest_cache .mypy_cache .ruff_cache
