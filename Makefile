# The two commands the README opens with. Each installs what it needs first.
VENV ?= .venv
STAMP := $(VENV)/.vlmbench-installed

.PHONY: bench test lint install

bench: $(STAMP)
	$(VENV)/bin/pytest benchmarks/

test: $(STAMP)
	$(VENV)/bin/pytest tests/

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy

install: $(STAMP)

$(STAMP): pyproject.toml tools/install.sh
	VENV=$(VENV) tools/install.sh
	touch $(STAMP)
