# The two commands of the quick start, and a few helpers. Works on a fresh Debian/Ubuntu box.
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: up test lint bench-queue bench-memory bench-lua bench-worker

## make up: start the platform locally (private Redis with AOF under ./data, the queue on :8000)
up: .venv/.synced
	$(UV) run --frozen python -m services.local

## make test: install what the tests need, then run them all
test: .venv/.synced
	scripts/install-test-packages.sh
	$(UV) run --frozen pytest

lint: .venv/.synced
	$(UV) run --frozen ruff check .

bench-queue: .venv/.synced
	$(UV) run --frozen python -m bench.queue

bench-memory: .venv/.synced
	$(UV) run --frozen python -m bench.memory

bench-lua: .venv/.synced
	$(UV) run --frozen python -m bench.lua_cost

bench-worker: .venv/.synced
	$(UV) run --frozen python -m bench.worker

# uv into the user's site; on a PEP 668 system Python that needs --break-system-packages
# (it only adds the uv binary to ~/.local).
$(UV):
	python3 -m pip install --user --quiet "uv==$(UV_VERSION)" \
	  || python3 -m pip install --user --break-system-packages --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@
