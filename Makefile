# moco-bench: every target that needs the environment depends on the setup stamp, so a fresh clone needs
# no manual step; a second `make setup` does nothing.
PY := .venv/bin/python
STAMP := .venv/.setup-done
CKPT ?=
SUITE ?= paper
OUT ?= results/runs
CONFIG ?= pretrain/mocov2_demo_fmnist.yaml

.PHONY: setup test lint demo pretrain eval-all tables bench data gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh scripts/install_common.py scripts/install_detectron2.py \
          scripts/install_patched_wheels.py
	bash scripts/setup.sh
	touch $@

lint: $(STAMP)
	.venv/bin/ruff check moco_bench tests benchmarks scripts

test: lint
	$(PY) -m pytest -q

data: $(STAMP)
	$(PY) -m moco_bench data build imagefolder
	$(PY) -m moco_bench data build minicoco

demo: $(STAMP)
	$(PY) -m moco_bench demo --out results/demo

# CKPT, SUITE, OUT and CONFIG reach the commands through the environment as their literal text, never through
# make's expansion: a value such as '$$(shell ...)' is a (strange) file name, not a command, even under make -n.
unexport CKPT SUITE OUT CONFIG
pretrain eval-all tables: export MB_CKPT = $(value CKPT)
pretrain eval-all tables: export MB_SUITE = $(value SUITE)
pretrain eval-all tables: export MB_OUT = $(value OUT)
pretrain eval-all tables: export MB_CONFIG = $(value CONFIG)

pretrain: $(STAMP)
	$(PY) -m moco_bench pretrain --config "$$MB_CONFIG"

eval-all: $(STAMP)
	@test -n "$$MB_CKPT" || { echo "usage: make eval-all CKPT=path/to/checkpoint [SUITE=paper|quick|demo] [OUT=results/runs]"; exit 2; }
	$(PY) -m moco_bench eval-all "$$MB_CKPT" --suite "suites/$$MB_SUITE.yaml" --out "$$MB_OUT"

tables: $(STAMP)
	$(PY) -m moco_bench tables "$$MB_OUT" --published -o results/report

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# One GPU, at most 8 minutes: every GPU path once, a table of PASS/FAIL lines with their figures (see README).
gpu-check: $(STAMP)
	$(PY) -m moco_bench gpu-check
