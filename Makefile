# The two commands of the README. Both create .venv on first use (Python >= 3.10 and uv,
# which installs torch + torchvision as a matching pair in seconds) and reuse it after.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
# Make expands a rule's prerequisites when it reads the rule, so every stamp is named up here.
SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: demo test install clean sysdeps

demo: $(STAMP)
	$(VENV)/bin/fogreid demo --out runs/demo

test: $(STAMP) sysdeps $(SERVE_STAMP)
	$(VENV)/bin/python -m pytest -q

# `fogreid serve` runs PyTriton, which pins numpy < 2: its own environment beside .venv, with
# fogreid itself and the few packages serving needs (tests/test_serve.py starts it on loopback).
$(SERVE_STAMP): pyproject.toml $(STAMP)
	$(VENV)/bin/uv venv -q --allow-existing --python $(VENV)/bin/python $(SERVE_VENV)
	$(VENV)/bin/uv pip install -q --python $(SERVE_VENV)/bin/python --no-deps -e .
	$(VENV)/bin/uv pip install -q --python $(SERVE_VENV)/bin/python 'nvidia-pytriton>=0.5' onnx onnxruntime polygraphy
	touch $(SERVE_STAMP)

# The stream tests serve a video with Debian's ffmpeg and the bus tests start Debian's
# redis-server: installed here when we may (root with apt-get), otherwise one line says what to
# install (those tests are skipped without them).
SYSDEPS := ffmpeg:ffmpeg redis-server:redis-server
sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get) for the stream and bus tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "not found:$$missing; the tests that need them will be skipped; install with: sudo apt-get install$$missing"; \
	  fi; fi

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(SERVE_VENV) runs
