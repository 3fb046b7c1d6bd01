# Two commands for a new user: `make demo` (set up + run the pipeline) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REQS   ?= requirements.txt

.PHONY: venv demo demo-fast test bench bench-peers clean gpu-venv dask-demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements-gpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(REQS)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# GPU machines: same environment with faiss-gpu instead of faiss-cpu.
gpu-venv:
	$(MAKE) venv REQS=requirements-gpu.txt

# The best model (twotower/configs/full.yaml, about 1 min end to end on 2 idle cores) next to popularity, random,
# ALS, BPR and EASE; `make demo-fast` runs the fast recipe (demo.yaml, about 1 min).
demo: venv
	$(VENV)/bin/twotower demo

demo-fast: venv
	$(VENV)/bin/twotower demo --config demo

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m bench.run_all

# Issue #15's trained-tower index tables (1M and 10M: default vs hnswlib vs ScaNN, compressed), end to end and
# resumable: train the 1M synthetic model, embed 1M/10M items, build and time every family (hours on 2 cores).
bench-peers: venv
	PYTHONPATH=$(CURDIR) $(PY) -m bench.peers_chain --data $${PEERS_DATA:-/work/bench-data/peers}

clean:
	rm -rf $(VENV) runs .cache

# Rebuild a tiny run on DirectRunner and on a local Dask cluster (a `dask scheduler` and 2 `dask worker`
# processes on 127.0.0.1, started and stopped here); fails unless the published indexes are byte-identical.
dask-demo: venv
	PYTHONPATH=$(CURDIR) $(PY) -m beam_jobs.dask_cluster demo --workers 2 --items 3000
