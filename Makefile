# multiplexer — `make help` lists every target.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
WORK   ?= work
export PYTHONDONTWRITEBYTECODE=1

.DEFAULT_GOAL := help
.PHONY: help install test test-processes test-all lint demo clean clean-work bench bench-ism bench-distill bench-loader bench-demo bench-scale bench-checksums bench-vcf bench-catalogue bench-storage bench-multiplexer bench-curve bench-identity bench-effects bench-gpu bench-beluga-shape gpu-wheels docs-cli

help:  ## List every target with what it does
	@grep -hE '^[$$()a-zA-Z0-9_./%-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-28s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python  ## (file) virtual env with the pinned CPU torch, then the package
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## Create .venv and install torch (CPU build pinned) and the package

test: $(VENV)/.installed  ## Run the test suite in-process (without tests marked slow or processes)
	$(BIN)/python -m pytest -q -m "not slow and not processes"

test-processes: $(VENV)/.installed  ## Run the tests that start processes: torchrun, SIGKILL, the console script
	$(BIN)/python -m pytest -q -m "processes and not slow"

test-all: $(VENV)/.installed  ## Run every test, slow and multi-process ones included
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed  ## ruff (check, format, complexity <= 15), mypy, and the import contract (import-linter)
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/ruff format --check pipeline tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: $(VENV)/.installed  ## Synthetic genome -> distill -> train -> evaluate -> plot, in work/demo
	$(BIN)/multiplexer demo --workdir $(WORK)/demo

bench-ism: $(VENV)/.installed  ## Naive vs fast ISM on Beluga (L=2000, F=2002) and the demo model -> bench/ism.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_ism.py --json bench/ism.json

bench-distill: $(VENV)/.installed  ## Distill samples/s and bytes/s (demo and Beluga-sized), per-codec bytes/sample -> bench/distill.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_distill.py --json bench/distill.json

bench-loader: $(VENV)/.installed  ## Loader against raw decode and a plain zarr read, checksum share, samples/s by workers, layouts and codecs, step times -> bench/loader.json, bench/loader_ism.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_loader.py --workdir $(WORK)/bench-loader --json bench/loader.json
	$(BIN)/python scripts/bench_loader.py --workdir $(WORK)/bench-loader --targets ism --no-beluga-step --json bench/loader_ism.json

bench-demo: $(VENV)/.installed  ## The demo end to end; its headline JSON -> bench/demo.json
	@mkdir -p bench
	$(BIN)/multiplexer -q demo --workdir $(WORK)/bench-demo | tail -n 1 > bench/demo.json

bench-scale: $(VENV)/.installed  ## 500 / 4,000 / 32,000 write units: distill s/unit, store info/verify, train/evaluate start-up, RSS -> bench/scale.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_scale.py --json bench/scale.json

bench-checksums: $(VENV)/.installed  ## Checksums on vs off (Beluga-sized): write/read/verify s/sample and bytes/sample, cost in % -> bench/checksums.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_checksums.py --json bench/checksums.json

bench-vcf: $(VENV)/.installed  ## score-vcf on 100,000 demo SNVs: variants/s and RSS per mode, shared vs centred vs exact, RSS at 10k vs 1M records, records/s over 1M skipped records -> bench/vcf.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_vcf.py --json bench/vcf.json --demo $(WORK)/demo

bench-effects: $(VENV)/.installed  ## Variant effects people rank, query and load: score-vcf variants/s with and without --values ref,alt; catalogue export rows/s, peak RSS and Parquet vs TSV.gz size on the demo's whole genome -> bench/effects.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_effects.py --json bench/effects.json --demo $(WORK)/demo --workdir $(WORK)/bench-effects

bench-catalogue: $(VENV)/.installed  ## SNV catalogue: positions/s (demo, BelugaMultiplexer-shaped), bytes/position, lookup p50/p99 with and without the read checks, stride choice, hg38 estimate -> bench/catalogue.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_catalogue.py --json bench/catalogue.json --demo $(WORK)/demo

bench-storage: $(VENV)/.installed  ## storage.quantize: bytes per window (demo, Beluga-shaped) and held-out weighted Pearson of the demo trained on each -> bench/storage.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_storage.py --json bench/storage.json --demo $(WORK)/demo

bench-multiplexer: $(VENV)/.installed  ## Multiplexer architectures on the demo (held-out accuracy, parameters, ms/window vs fast and naive ISM), the inference rewrite per architecture (as trained vs rewritten), and at Beluga shape -> bench/multiplexer.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_multiplexer.py --json bench/multiplexer.json --demo $(WORK)/demo

bench-curve: $(VENV)/.installed  ## Learning curves on the demo: held-out weighted Pearson (3 seeds, 95 % intervals) against distilled windows (one grown store) and steps, for the demo default (conv_k4), conv, conv_light and fast; distill cost per point; the loss variants and the default against issue 26's goal -> bench/curve.json, bench/curve.png, REPORT.md's section
	@mkdir -p bench
	$(BIN)/python scripts/bench_curve.py --json bench/curve.json --plot bench/curve.png --demo $(WORK)/demo --workdir $(WORK)/bench-curve --jobs 2
	$(BIN)/python scripts/bench_report.py --section curve

bench-identity: $(VENV)/.installed  ## Genome sequence digest cold vs cached on a generated 150 Mb genome (plain, bgzip), hg19 estimate, metadata digest cost -> bench/identity.json
	@mkdir -p bench
	$(BIN)/python scripts/bench_identity.py --json bench/identity.json

bench: bench-ism bench-distill bench-loader bench-demo bench-scale bench-checksums bench-vcf bench-catalogue bench-storage bench-multiplexer bench-curve bench-identity bench-effects  ## Every benchmark, then bench/REPORT.md with all figures
	$(BIN)/python scripts/bench_report.py

bench-gpu:  ## On a GPU machine: every GPU figure in <= 8 min -> bench/*_cuda.json, REPORT.md's GPU section (DEVICE=cpu TINY=1: a dry run)
	scripts/bench_gpu.sh

bench-beluga-shape:  ## On a GPU machine: fast and the BelugaMultiplexer trained on a Beluga-shaped store (random Beluga), held-out weighted Pearson and ms/window -> bench/beluga_shape_cuda.json (DEVICE=cpu TINY=1: a dry run)
	scripts/bench_beluga_shape.sh

GPU_PYTHON ?= 3.12
gpu-wheels: $(VENV)/.installed  ## Download the package's dependencies as wheels into .whl/ for a GPU machine without a network (GPU_PYTHON=3.12)
	@mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/python -c "from importlib.metadata import version as v; print(' '.join(f'{n}=={v(n)}' for n in ('zarr', 'numcodecs', 'donfig', 'google-crc32c', 'crc32c', 'pyfaidx', 'biopython', 'pysam')))")
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		"nvidia-nvcomp-cu12>=4"  # the gpu extra: train --decode gpu
	@du -sh .whl

docs-cli: $(VENV)/.installed  ## Regenerate docs/cli.md from the click commands
	$(BIN)/python scripts/gen_cli_docs.py

# ---- the pipeline as a DAG of real files (a store depends on its spec, a run on its store) ----
$(WORK)/genome/demo.fa: | $(VENV)/.installed  ## The synthetic genome used by data_specs/demo.yaml
	$(BIN)/multiplexer genome synth $@

stores/%.zarr.done: data_specs/%.yaml | $(VENV)/.installed  ## Distill data_specs/NAME.yaml into stores/NAME.zarr (stamp when complete)
	$(BIN)/multiplexer distill $< --store stores/$*.zarr
	$(BIN)/multiplexer store verify stores/$*.zarr
	touch $@

stores/demo.zarr.done: $(WORK)/genome/demo.fa

runs/%/best.pt: stores/%.zarr.done  ## Train on a store with its spec's train: defaults
	$(BIN)/multiplexer train data_specs/$*.yaml --store stores/$*.zarr --run-dir runs/$* \
		$(if $(wildcard runs/$*/last.pt),--resume,)

runs/%/eval/report.json: runs/%/best.pt  ## Evaluate a run against its store's held-out split
	$(BIN)/multiplexer evaluate --checkpoint $< --store stores/$*.zarr --out runs/$*/eval --overwrite

# real files that later steps depend on: never delete them as intermediates
.PRECIOUS: stores/%.zarr.done runs/%/best.pt

clean-work:  ## Remove work/, stores/ and runs/ (generated data)
	rm -rf $(WORK) stores runs

clean: clean-work  ## Also remove the virtual environment
	rm -rf $(VENV) *.egg-info
