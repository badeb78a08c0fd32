# The two commands a user needs: `make fabric` (launch the default fabric) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TOPO   ?= fattree:2,2,4,2
BACKEND ?= fast
PYTEST_ARGS ?=
STAMP  := $(VENV)/.installed

.PHONY: install debs test test-fast test-std bench fuzz soak fabric clean

# Bytecode for every module, written once here: every process of a fabric (the device hosts, the
# tools) then reads it, also where PYTHONDONTWRITEBYTECODE is set, instead of compiling each module
# at each start (0.1 s of a 648-HCA fabric's launch). Quick when nothing changed.
install: $(STAMP)
	@$(PY) -m compileall -q -j 0 fabric ipoib >/dev/null
	@$(PY) -c "import sys; from fabric.wire import _codegen; sys.exit(_codegen.main())" || echo "note: the generated codecs' cache was not written (fabric/wire/__pycache__ not writable?)"

# The editable install as a plain path in a .pth file: setuptools' default puts an import hook there
# instead, which imports pathlib and more at every start of every Python process of the venv (the
# device hosts, each ibfab command; 9 ms each). setuptools calls that mode transitional: where it is
# gone, the default install is used.
EDITABLE := --config-settings editable_mode=compat

PYX := $(wildcard ipoib/*.pyx fabric/*.pyx fabric/*/*.pyx)

$(STAMP): pyproject.toml setup.py $(PYX) $(wildcard ipoib/*.pxd fabric/*.pxd fabric/*.h ipoib/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]' $(EDITABLE) || $(PIP) install --quiet -e '.[dev]'
	$(PY) -c "import ipoib._fastring, ipoib._fasttun, ipoib._fastrx, ipoib._fastpath, fabric._wirefast, fabric._structfast, fabric.host._localfast, fabric.devices._smafast, fabric.simproto._simfast, fabric._corefast, ipoib._fastctx"  # the extensions must have been built
	touch $@

# Debian packages the tests use (tshark; later opensm, ibsim-utils, infiniband-diags).
debs:
	bash scripts/install-debs.sh

test: install debs
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory test-std

test-fast:
	@echo "=== test suite, default backend (fast) ==="
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-std:
	@echo "=== test suite, IPOIB_BACKEND=std FABRIC_BACKEND=std (every path in Python) ==="
	IPOIB_BACKEND=std FABRIC_BACKEND=std $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install debs
	$(PIP) install --quiet -e '.[dev,bench]' $(EDITABLE) || $(PIP) install --quiet -e '.[dev,bench]'
	$(PY) -m pytest bench -q --benchmark-columns=min,median,mean,ops --benchmark-sort=name -p no:randomly

# Hostile input at length: 100k fuzzed RPC calls against a running fabric (make test runs a sample)
fuzz: install
	IBFAB_FUZZ_CALLS=$${IBFAB_FUZZ_CALLS:-100000} $(PY) -m pytest -q tests/test_rpc_fuzz.py $(PYTEST_ARGS)

# 10 minutes of mixed traffic, cable flaps and a device-host kill a minute, with exact packet
# conservation on every link; the figures go to soak-report.json (bench/RESULTS.md keeps them)
soak: install
	IBFAB_SOAK_S=$${IBFAB_SOAK_S:-600} IBFAB_SOAK_REPORT=$${IBFAB_SOAK_REPORT:-soak-report.json} \
		$(PY) -m pytest -q -s tests/test_soak.py -k conserve $(PYTEST_ARGS)

fabric: install
	$(VENV)/bin/ibfab demo $(TOPO)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .benchmarks $(patsubst %.pyx,%.c,$(PYX)) ipoib/*.so fabric/*.so fabric/*/*.so runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
