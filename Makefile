# al-pipeline: `make demo` and `make test` are the only set-up commands a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(DATA)/dagster_home
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000

.PHONY: install demo test test-fast lint ui clean-data help instance labelstudio

help:
	@echo "make demo   - install if needed, then run the main job on the sample images"
	@echo "make test   - install if needed, then lint and run the whole test suite (CI runs this)"
	@echo "make test-fast - lint and the tests that need no daemon or server (a few minutes): for daily work"
	@echo "make ui     - the Dagster UI on http://$(UI_HOST):$(UI_PORT) (other Host names refused)"
	@echo "make labelstudio - install Label Studio into its own $(LS_VENV) (docs/label-studio.md)"

$(STAMP): pyproject.toml
	@echo "installing al-pipeline and its pinned dependencies into $(VENV) (2-3 minutes the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	set -o pipefail; $(BIN)/python -m pip install --progress-bar off -e '.[test,bench]' \
	  | { grep --line-buffered -E '^(Collecting|Successfully)' || true; }
	@touch $(STAMP)

install: $(STAMP)

# Label Studio in a virtual environment of its own: its Django and pydantic pins differ from Dagster's, so they never
# touch $(VENV). The stamp depends on the Makefile only (the pins live here).
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO_PINS := label-studio==1.23.2 label-studio-sdk==2.1.2

$(LS_STAMP): Makefile
	@echo "installing $(LABEL_STUDIO_PINS) into $(LS_VENV) (a few minutes the first time)"
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	set -o pipefail; $(LS_VENV)/bin/python -m pip install --progress-bar off $(LABEL_STUDIO_PINS) \
	  | { grep --line-buffered -E '^(Collecting|Successfully)' || true; }
	@$(LS_VENV)/bin/python -c "from importlib.metadata import version as v; print('label-studio', v('label-studio'))"
	@touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

# the project's Dagster instance settings (one-run queue, run monitoring, retries)
instance:
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install instance
	$(BIN)/python -m al_assets.tools.demo

# the browser test (tests/test_browser.py) drives Debian's chromium through Playwright
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# ruff's lint and format checks (configuration in pyproject.toml)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint instance chromium labelstudio
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not slow"

# the daemon and the Dagster UI; the UI refuses requests naming any host but its own address, localhost or
# 127.0.0.1 (DNS rebinding: docs/reliability.md); extra names: AL_UI_ALLOWED_HOSTS=name[:port],...
ui: install instance
	$(BIN)/python -m al_assets.tools.ui -h $(UI_HOST) -p $(UI_PORT) -w workspace.yaml

clean-data:
	rm -rf $(DATA)
