# moco-bench: every target that needs the environment depends on the setup stamp, so a fresh clone needs
# no manual step; a second `make setup` does nothing.
PY := .venv/bin/python
STAMP := .venv/.setup-done
CKPT ?=
SUITE ?= demo
OUT ?= results/runs
CONFIG ?= pretrain/mocov2_demo_fmnist.yaml

.PHONY: setup test lint demo pretrain eval-all tables bench data clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh scripts/install_detectron2.py
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
	@echo "make demo: pretraining, eval-all and tables are added as their issues land; building the embedded data now."
	$(MAKE) data

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
