# The two commands of the README do all set-up on a fresh machine (Debian, Python 3.11, Java 17, Maven):
#   make demo   — virtualenv, install, Apache Kafka jars, then the demo on a local broker
#   make test   — the same set-up plus kcat, then the whole test suite on a real broker
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-deps lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed
	$(VENV)/bin/driftline kafka fetch

system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: system-deps setup
	$(VENV)/bin/driftline demo

test: system-deps setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile  # two workers, each with its own broker; a file stays on one

bench: setup
	$(PY) bench/features_bench.py
	$(PY) bench/detectors_bench.py --quick
	$(PY) bench/pipeline_bench.py
