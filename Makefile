# The two commands the README opens with. Each installs what it needs first.
VENV ?= .venv
STAMP := $(VENV)/.vlmbench-installed
# The heavy in-process engines (torch, transformers, vLLM) live in their own environment, so
# the two default commands stay fast: `make bench-engines`, `make test-engines`.
ENGINES_VENV ?= .venv-engines
ENGINES_STAMP := $(ENGINES_VENV)/.vlmbench-installed

.PHONY: bench bench-quality test lint install engines bench-engines test-engines

# The run's report (markdown, HTML, CSV, plots) goes to .vlmbench/report/.
bench: $(STAMP)
	$(VENV)/bin/pytest benchmarks/ --vlm-report=.vlmbench/report

# The shipped quality suites (task suite with ground truth, photo scoring, two-stage
# pipeline): extended, so `make bench` skips them.
bench-quality: $(STAMP)
	$(VENV)/bin/pytest benchmarks/quality/ --vlm-extended --vlm-report=.vlmbench/report-quality

test: $(STAMP)
	$(VENV)/bin/pytest tests/

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy

install: $(STAMP)

$(STAMP): pyproject.toml tools/install.sh
	VENV=$(VENV) tools/install.sh
	touch $(STAMP)

engines: $(ENGINES_STAMP)

bench-engines: $(ENGINES_STAMP)
	$(ENGINES_VENV)/bin/pytest benchmarks/engines/

test-engines: $(ENGINES_STAMP)
	$(ENGINES_VENV)/bin/pytest tests/engines/

$(ENGINES_STAMP): pyproject.toml tools/install.sh tools/install_engines.sh
	VENV=$(ENGINES_VENV) tools/install_engines.sh
	touch $(ENGINES_STAMP)
