# Two entry points for a fresh machine (see README):  make demo  |  make test
# Each makes (or reuses) the virtual environment in $(VENV) and installs the project into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# torch and torchvision must come from one resolve, pinned in every pip call: a later unpinned
# install would replace torch by another build, and a torchvision of another release cannot load
# its compiled ops (which breaks open_clip and nnU-Net's trainer lookup).
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=

.PHONY: install demo test clean-venv

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install $(TORCH_PAIR)
	$(PY) -m pip install $(TORCH_PAIR) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/nnunetv2_zept demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

clean-venv:
	rm -rf $(VENV)
