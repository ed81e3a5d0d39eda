# Two entry points (see README): `make book` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wspec-installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# python3-venv: Debian's python3 cannot make a virtual environment without it.
DEBS := python3 python3-venv espeak-ng sox chromium texlive-xetex texlive-latex-extra \
        texlive-fonts-recommended texlive-fonts-extra latexmk fonts-freefont-otf
MODELS ?= tiny.en base
export HF_HUB_OFFLINE ?= 1
export TQDM_DISABLE ?= $(if $(CI),1,)
export PYTHONUNBUFFERED := 1

.PHONY: book test lint unit pytest book-ci system-deps clean

## make book: run every chapter on the bundled models and build HTML + PDF
book: $(STAMP)
	$(VENV)/bin/wspec book --models $(MODELS)

## make test: lint, every test (slow ones included), then a reduced strict book build and its checks
test: lint pytest book-ci

lint: $(STAMP)
	$(VENV)/bin/ruff check wspec tests scripts
	$(VENV)/bin/ruff format --check wspec tests scripts

## make unit: the fast tests only (no test marked slow), for a quick check while editing
unit: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

book-ci: $(STAMP)
	$(VENV)/bin/wspec book --models tiny.en --reduced
	$(PY) scripts/check_book.py

$(STAMP): pyproject.toml | system-deps
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "wspec needs Python >= 3.10 (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[book,test,assignments]"
	rm -f $(VENV)/.wspec-installed-*
	touch $@

system-deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages: $$missing"; \
	    echo "Install them first: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf _build book/runs .jupyter_cache
