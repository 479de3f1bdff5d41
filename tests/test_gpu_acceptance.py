"""bench/gpu_acceptance.sh --dry-run: the checks of the GPU acceptance run, on the CPU at their smallest.

All but MegaTTS3's: its row builds and loads upstream's full-size DiT and WaveVAE (their sizes are
hard-coded upstream) for two minutes on CI's two cores, and its worker is the one
tests/test_megatts3_worker.py runs. MOSS-TTSD's environment is installed first where missing (its
tests need it too), so its row runs in its worker rather than being skipped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from engines.gpu import GpuAllocator
from engines.moss_ttsd import MossTtsdEngine
from tests.engine_checks import ready

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream"


@pytest.mark.slow
def test_the_dry_run_passes_every_check_and_prints_one_table(tmp_path: Path) -> None:
    ready(MossTtsdEngine(ROOT / "weights", GpuAllocator([])).environment())
    rows_file = tmp_path / "rows.json"
    checks = ["inventory", "preflight", "kokoro-onnx", "kokoro-torch", "moss-ttsd", "piper-train"]
    out = subprocess.run(
        [str(ROOT / "bench" / "gpu_acceptance.sh"), "--dry-run", "--out", str(rows_file), "--only", *checks],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = {row["check"]: row for row in json.loads(rows_file.read_text())}
    assert list(rows) == checks
    expected = {"pass"} if UPSTREAM.is_dir() else {"pass", "skip"}
    assert {row["result"] for row in rows.values()} <= expected, rows
    assert rows["preflight"]["device"] == "gloo" and "2 ranks on gloo" in rows["preflight"]["detail"]
    for name in ("kokoro-onnx", "kokoro-torch", "moss-ttsd"):
        if rows[name]["result"] == "pass":
            assert "s of audio, RTF" in rows[name]["detail"], rows[name]
    assert rows["moss-ttsd"]["detail"].startswith("worker") or rows["moss-ttsd"]["result"] == "skip"
    assert "2 steps, 32-true" in rows["piper-train"]["detail"]
    assert out.stdout.startswith("GPU acceptance (dry run on the CPU)")
    assert all(name in out.stdout for name in rows)
