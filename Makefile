# DeT for ComfyUI: set-up, host, tests and demo. Every target works from a fresh clone.
SHELL := /bin/bash
PY := .venv/bin/python
PORT ?= 8188
ARGS ?=

.PHONY: setup serve test demo clean

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m det_tools.host serve --host-dir "$$(cat .comfyui-path)" --port $(PORT) -- $(ARGS)

# pytest exits 5 when it collected no test: that is a failure here, like any other non-zero code.
test: setup
	@$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: setup
	@$(PY) -m devtools.demo --host-dir "$$(cat .comfyui-path)" --out demo_output

clean:
	rm -rf .venv .comfyui .comfyui-path .cache demo_output test_artifacts
