"""The benchmark scripts run (in their fast mode, on tiny shapes), so they cannot rot between the
sessions that measure with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_llm_fast_mode_measures_every_path(tmp_path):
    pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_llm.py"), "--fast", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    timed = [k for k in results if k.startswith(("tokenizer load", "ImageLM load", "classify", "draw", "best-of"))]
    assert len(timed) >= 8
    assert all(isinstance(results[k], float) and results[k] > 0 for k in timed)
