# Set-up and entry points for a fresh machine. `make demo` and `make test` are the README's two commands.
# `make demo` builds the default target `all` (tables, example figures, box model): everything that
# `snakemake --report report.html` puts in the report.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tested torch build; any torch >= 2.4 works for users who install it themselves.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint box-model

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH) -e ".[workflow,test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/snakemake --cores 2 --workflow-profile workflow/profiles/default all
	cat results/demo_corloc.md

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint

# The box model `sensitivity localize` uses by default, rebuilt byte for byte from the ImageNet sample of
# ../shared (configs/box_model.yaml).
box-model: setup
	$(BIN)/snakemake --cores 2 results/box_model/regressor.npz --configfile configs/box_model.yaml
	cp results/box_model/regressor.npz sensitivity/box_models/imagenet_efficientnet_lite0.npz
