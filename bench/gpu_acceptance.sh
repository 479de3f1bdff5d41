#!/usr/bin/env bash
# GPU acceptance run (bench/gpu_acceptance.py): the studio's GPU paths on tiny random weights, one table.
#   bench/gpu_acceptance.sh             on this machine's GPUs (at most 8 minutes on one H100/H200)
#   bench/gpu_acceptance.sh --dry-run   the same checks on the CPU at their smallest (CI runs this)
# Other options: --upstream DIR (the seeds' code, default ../shared/upstream), --only CHECK..., --out FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${STUDIO_PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec timeout 480 "$python" bench/gpu_acceptance.py "$@"
