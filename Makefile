# Set-up and everyday commands. Every target creates .venv with the tested recipe when it is missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.facd-installed
# test files run in 2 processes of one torch thread each (2 cores; one file's tests stay in one process)
TEST_WORKERS ?= 2

.PHONY: test lint demo mini-table venv clean-venv format

venv: $(STAMP)

# torch first (local files on our machines), then basicsr without build isolation so its sdist build does not
# download a second torch, then this package in editable mode.
$(STAMP): setup.py Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-build-isolation basicsr==1.4.2 lmdb pyyaml opencv-python numpy tb-nightly scikit-image scikit-learn tqdm \
		pytest pytest-xdist flake8 isort yapf onnx onnxruntime matplotlib safetensors spandrel==0.4.2
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/flake8 facd_basicsr facd_study scripts tests benchmarks
	$(VENV)/bin/isort --check-only --diff facd_basicsr facd_study scripts tests benchmarks

test: lint
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

format: $(STAMP)
	$(VENV)/bin/isort facd_basicsr facd_study scripts tests benchmarks
	$(VENV)/bin/yapf -i -r facd_basicsr facd_study scripts tests benchmarks

demo: $(STAMP)
	$(VPY) scripts/demo.py

mini-table: $(STAMP)
	$(VPY) scripts/mini_table.py

clean-venv:
	rm -rf $(VENV)
