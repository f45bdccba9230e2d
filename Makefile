# Eidetic: `make demo` (install + ingest the bundled sample + ask about it), `make test` (install + tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
DEMO_STORE := eidetic-demo

.PHONY: install demo test sysdeps clean-demo

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# System packages some tests and benchmarks need, installed with apt-get when root: ffmpeg (loopback
# stream servers, the ingest benchmark), chromium + chromium-driver (the web page test).
SYSDEPS := ffmpeg chromium chromium-driver
sysdeps:
	@if [ -n "$(SYSDEPS)" ] && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(SYSDEPS); fi

demo: install
	rm -rf $(DEMO_STORE)
	$(BIN)/eidetic ingest pipeline/assets/demo.mp4 --store $(DEMO_STORE)
	$(BIN)/eidetic query "when did the glass break?" --store $(DEMO_STORE)

test: install sysdeps
	$(BIN)/python -m pytest -m "not gpu" -q

clean-demo:
	rm -rf $(DEMO_STORE)
