# The two commands of the README. Both create .venv on first use (Python >= 3.10 and uv,
# which installs torch + torchvision as a matching pair in seconds) and reuse it after.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test install clean sysdeps

demo: $(STAMP)
	$(VENV)/bin/fogreid demo --out runs/demo

test: $(STAMP) sysdeps
	$(VENV)/bin/python -m pytest -q

# The stream tests serve a video with Debian's ffmpeg: installed here when we may (root with
# apt-get), otherwise one line says what to install (those tests are skipped without it).
sysdeps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing ffmpeg (apt-get) for the stream tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else \
	    echo "ffmpeg not found: the stream tests will be skipped; install it with: sudo apt-get install ffmpeg (or brew install ffmpeg)"; \
	  fi; }

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
