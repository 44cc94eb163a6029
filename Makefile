# patchalign_ros: `make demo` shows it working, `make test` runs the whole test suite.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
DEPS_STAMP       := $(VENV)/.stamp-deps
INTERFACES_STAMP := $(VENV)/.stamp-interfaces
PY_SOURCES := $(shell find patchalign_ros scripts -type f \( -name '*.py' -o -name '*.in' \) 2>/dev/null)
INTERFACE_INPUTS := CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv) $(PY_SOURCES) \
                    $(wildcard launch/* config/* rviz/* models/*)
PYTEST_ARGS ?=

.PHONY: setup test demo clean distclean
.DEFAULT_GOAL := setup

setup: $(INTERFACES_STAMP)

$(DEPS_STAMP): requirements.lock tools/setup_venv.sh
	bash tools/setup_venv.sh deps
	touch $@

$(INTERFACES_STAMP): $(DEPS_STAMP) $(INTERFACE_INPUTS)
	bash tools/setup_venv.sh interfaces
	touch $@

test: setup
	$(PYTHON) -m pytest test $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m patchalign_ros demo

clean:
	rm -rf build install log $(VENV)/.build $(INTERFACES_STAMP)
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
