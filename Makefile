# The two commands of the README. Both create .venv on first use (Python >= 3.10 and uv,
# which installs torch + torchvision as a matching pair in seconds) and reuse it after.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

demo: $(STAMP)
	$(VENV)/bin/fogreid demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
