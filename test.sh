#!/usr/bin/env bash
# Set up (first time) and run the whole test suite: lint, format check, every test (browser included).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
scripts/ensure_chromium.sh || true   # browser tests skip with the reason when it cannot be installed
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
if [ "$#" -gt 0 ]; then  # a chosen part of the suite: its tests install what they need themselves
  exec .venv/bin/python -m pytest "$@"
fi
# The whole suite: MegaTTS3's and GPT-SoVITS's environments (minutes of downloads where missing)
# install in the background while the tests before theirs run, and a test that needs one waits for
# it (tests/engine_checks.py). MOSS-TTSD's is left to the Engines tab test, which installs it.
prefetch_log=$(mktemp -t engine-envs.XXXX.log)
(for engine in megatts3 gpt_sovits; do nice -n 10 .venv/bin/python -m studio.engines install "$engine" --if-needed || true; done) \
  >"$prefetch_log" 2>&1 &
prefetch=$!
trap '{ pkill -P "$prefetch"; kill "$prefetch"; } 2>/dev/null || true' EXIT  # none left behind
status=0
.venv/bin/python -m pytest || status=$?
wait
echo "engine environments installed in the background: log in $prefetch_log"
exit "$status"
