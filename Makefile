# voxwire: `make demo` to hear it work, `make test` to prove it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages: speech for test callers (espeak-ng, sox), real peers (mosquitto, sipp, chromium, firefox).
TEST_SYSTEM_PACKAGES := espeak-ng sox mosquitto mosquitto-clients sip-tester chromium chromium-driver firefox-esr openssl iproute2
DEMO_SYSTEM_PACKAGES := espeak-ng sox
# Opt-in impaired-network runs (tests/reliability/test_impaired.py): iptables and NFQUEUE, whose
# Python binding (the [impaired] extra) is built from source. Root only; not part of `make test`.
IMPAIRED_SYSTEM_PACKAGES := iptables libnetfilter-queue-dev build-essential python3-dev
# Silero's wheel declares torch but its ONNX file needs only onnxruntime: install it without deps.
SILERO := silero-vad==6.2.3
PYTEST_ARGS ?=

.PHONY: help demo test test-impaired bench system-deps-test system-deps-demo clean

help:
	@echo "make demo   - create $(VENV), install the local models, run the offline demo call"
	@echo "make test   - install system packages and dev extras, run the whole test suite"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make test-impaired - (root) SIP and WebRTC calls through 5 % loss and 40 +- 10 ms jitter, ~4 min"
	@echo "after 'make demo': $(VENV)/bin/voxwire serve --transport webrtc --agent MODULE:OBJECT --port 8080  (browser page)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip

$(VENV)/.local-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[local]'
	$(PIP) install -q --no-deps $(SILERO)
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[all,dev]'
	$(PIP) install -q --no-deps $(SILERO)
	touch $@

system-deps-test:
	bash .ci/system-deps.sh $(TEST_SYSTEM_PACKAGES)

system-deps-demo:
	bash .ci/system-deps.sh $(DEMO_SYSTEM_PACKAGES)

demo: system-deps-demo $(VENV)/.local-installed
	$(VENV)/bin/voxwire demo
	@echo "talk to the bot in a browser: $(VENV)/bin/voxwire serve --transport webrtc --port 8080, then open http://localhost:8080/"

test: system-deps-test $(VENV)/.dev-installed
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-impaired: system-deps-test $(VENV)/.dev-installed
	bash .ci/system-deps.sh $(IMPAIRED_SYSTEM_PACKAGES)
	$(PIP) install -q -e '.[impaired]'
	VOXWIRE_IMPAIRED=1 $(PY) -m pytest -q -p no:cacheprovider tests/reliability/test_impaired.py $(PYTEST_ARGS)

bench: $(VENV)/.dev-installed
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
