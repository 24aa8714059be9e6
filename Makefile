# Two commands do everything (see README.md):
#   make example   install, then run the main job on the bundled example dataset
#   make test      install with the test extras, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
EXAMPLE ?= example_run

.PHONY: install example test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

example: install
	bash scripts/run_example.sh $(VENV)/bin $(EXAMPLE)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(EXAMPLE)
