# serve-kosmos-2: set-up, tests, local serving and a demo. See README.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv lint test test-fast serve demo samples eval-samples evaluate evaluation-docs tiny-checkpoint tiny-sam2 label bench bench-label bench-server bench-video bench-masks profile-server gpu-check load-test export-openvino bench-openvino clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

## venv: create .venv (if missing), install the pinned dependencies and this project (editable)
venv: $(STAMP)

## lint: ruff check, ruff format --check and mypy over src/ (configured in pyproject.toml)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## test: the whole suite (unit, integration, e2e), on every core (pytest-xdist: a module's tests, and the Ray tests, each in one process)
test: venv
	$(PY) -m pytest -n auto --dist loadscope

## test-fast: the unit and integration tests (no servers, CLIs or Ray clusters, no long compiles or exports; fewer fuzz examples)
test-fast: venv
	$(PY) -m pytest -m "not e2e and not slow" -n auto --dist loadscope --hypothesis-profile=fast

## serve: the app with its UI on http://127.0.0.1:8000 (PORT=...), not deployed until Serve or /deploy_from_api
PORT ?= 8000
serve: venv
	@echo "Kosmos-2 on http://127.0.0.1:$(PORT): importing torch and the SDK takes up to a minute before it answers. Ctrl+C stops it."
	@$(PY) -m uvicorn main:model.app --app-dir src --host 127.0.0.1 --port $(PORT) --ws websockets

## samples: the README's sample images, samples/blue_square.png and samples/shapes.png
samples: venv
	@$(PY) -m tests.tiny_model.samples samples

## tiny-checkpoint: build the tiny trained Kosmos-2 if needed; prints its folder last
tiny-checkpoint: venv
	@$(PY) -m tests.tiny_model.locate

## tiny-sam2: train the tiny SAM 2 of the tests and the README (tests/tiny_sam2/checkpoint: image model and video memory) again, ~25 min
tiny-sam2: venv
	PYTHONPATH=src:. $(PY) -m tests.tiny_sam2.train

## demo: offline, the tiny model through CLI predict on generated images, results drawn
demo: venv
	@set -e; checkpoint=$$($(PY) -m tests.tiny_model.locate | tail -n 1); \
	$(PY) -m tests.tiny_model.demo demo_output/images; \
	KOSMOS2_CHECKPOINT=$$checkpoint $(PY) src/main.py predict demo_output/images \
		--device cpu --output demo_output/predictions --draw; \
	KOSMOS2_CHECKPOINT=$$checkpoint $(PY) src/main.py predict demo_output/images \
		--device cpu --output demo_output/grounding --draw \
		--settings task=phrase_grounding "phrases=circle. square. triangle"; \
	KOSMOS2_CHECKPOINT=$$checkpoint $(PY) src/main.py predict demo_output/images \
		--device cpu --output demo_output/vqa --draw \
		--settings task=vqa "question=What colour is the triangle?"; \
	echo "captions: demo_output/predictions/images; phrase grounding: demo_output/grounding/images;" \
		"questions: demo_output/vqa/images"

## bench: reference path vs our engine on the real architecture (random weights); small counts on CPU
bench: venv
	$(PY) -m bench.engine_bench $(if $(filter cuda%,$(DEVICE)),--device $(DEVICE),--device cpu --quick)

## eval-samples: a labelled sample project (shapes, Supervisely format) in eval-samples/shapes-project
eval-samples: venv
	$(PY) -m tests.support.evaluation_cases eval-samples/shapes-project

## evaluate: phrase grounding on a labelled project (PROJECT=folder|project:ID OUT=folder, ARGS= for more options)
evaluate: venv
	$(PY) src/evaluate.py project $(PROJECT) --out $(OUT) $(ARGS)

## evaluation-docs: the README's evaluation report, made by the tiny model on the sample project, into docs/evaluation
evaluation-docs: eval-samples
	KOSMOS2_CHECKPOINT=$$($(PY) -m tests.tiny_model.locate | tail -n 1) $(PY) src/evaluate.py project eval-samples/shapes-project --out docs/evaluation

## bench-label: the labelling job on Ray (1 and 2 actors) against one process doing the same work (tiny model, ~3 min)
bench-label: venv
	$(PY) -m bench.label_bench

## label: label a folder or project with Ray (SOURCE=folder|project:ID OUT=folder, ARGS= for more options)
label: venv
	$(PY) src/label.py $(SOURCE) --out $(OUT) $(ARGS)

## bench-server: the serving path old and new side by side against the engine alone (tiny model, CPU, ~4 min)
bench-server: venv
	$(PY) -m bench.server_bench

## bench-video: frames per second, the video path against the same frames as images, tiny model and real architecture (CPU ~6 min)
bench-video: venv
	$(PY) -m bench.video_bench

## bench-masks: SAM 2 (real architecture, random weights) on 1, 5 and 20 boxes, ours against one call per box, and what masks add to Kosmos-2's boxes (CPU ~7 min)
bench-masks: venv
	$(PY) -m bench.masks_bench

## profile-server: py-spy samples the old and new serving paths under single-image requests; summary in bench/results
profile-server: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m bench.profile_server

## gpu-check: on a lent GPU machine (torch and transformers, no supervisely, no registry): its stack, the GPU tests,
## the full engine benchmark and the masks and video benchmarks, written to bench/results (about 8 min); DRY_RUN=1 checks the steps on any machine.
## Wheels in .whl/ (e.g. the pinned transformers) are installed first, into /tmp/kosmos2-site.
GPU_PYTHON ?= python3
gpu-check:
	@if [ -d .whl ]; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/kosmos2-site .whl/*.whl; fi
	PYTHONPATH=/tmp/kosmos2-site:src:. $(GPU_PYTHON) -m bench.gpu_check $(if $(DRY_RUN),--dry-run)

## load-test: 32 clients, 2000 requests, every task and size, good and bad mixed; fails on a wrong or cross-talked answer or RSS growth over 10% (tiny model, CPU)
load-test: venv
	$(PY) -m bench.load_test

## export-openvino: OpenVINO IR beside the weights: CHECKPOINT (hub id or folder), WEIGHTS int8|int4|fp32|int8-act
CHECKPOINT ?= microsoft/kosmos-2-patch14-224
WEIGHTS ?= int8
export-openvino: venv
	$(PY) -m kosmos2_engine.runtime.openvino.export $(CHECKPOINT) --weights $(WEIGHTS)

## bench-openvino: torch fp32 vs OpenVINO fp32/int8/int4 and int8 with int8 vision activations, per stage, on the real architecture, CPU (~18 min, ~22 GB disk)
bench-openvino: venv
	$(PY) -m bench.openvino_bench

clean:
	rm -rf app_data demo_output predictions samples .pytest_cache
