#!/usr/bin/env bash
# Set up (first time) and start Speech Studio on its embedded engines.
#   ./run.sh                   http://127.0.0.1:7860
#   ./run.sh --host 0.0.0.0    LAN demo;  --port N;  --share
#   ./run.sh --wyoming tcp://0.0.0.0:10200    also serve Home Assistant (Wyoming protocol)
#   ./run.sh --ray 10.0.0.5:6379              make speech on the nodes of a Ray cluster
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python app.py "$@"
