#!/usr/bin/env bash
# Set up (first time) and run the whole test suite: lint, format check, every test (browser included).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
scripts/ensure_chromium.sh || true   # browser tests skip with the reason when it cannot be installed
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# Two test processes (one per core on the CI machine), each module whole in one of them (tests/conftest.py).
exec .venv/bin/python -m pytest -n "${STUDIO_TEST_PROCESSES:-2}" --dist loadgroup --no-loadscope-reorder "$@"
