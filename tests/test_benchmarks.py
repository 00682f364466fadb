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
    paths = ("classify images/s", "draw 2 in one call: drawings/s", "draw 3 in one call: drawings/s",
             "draw 2: memory-bound ceiling, drawings/s", "best-of-2 draw drawings/s")
    timed = [k for k in results if k.startswith(("tokenizer load", "ImageLM load"))]
    timed += [f"{precision} {path}" for precision in ("fp32", "bf16") for path in paths]
    assert len(timed) == 13
    assert all(isinstance(results[k], float) and results[k] > 0 for k in timed)


def test_bench_nearest_code_fast_mode_runs_every_method_and_every_one_is_exact(tmp_path):
    out = tmp_path / "search.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_nearest_code.py"), "--fast", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"floor", "cdist", "matmul", "ours-torch", "ours-oneshot", "oneshot-float64"} <= methods
    assert {(r["metric"], r["dtype"]) for r in rows} == {(m, d) for m in ("cosine", "l2", "dot")
                                                        for d in ("float32", "bfloat16")}
    exact = [r for r in rows if r["method"] in ("ours-torch", "ours-oneshot", "oneshot-float64")]
    assert all(r["exact_fraction"] == 1.0 and r["median_ms"] > 0 for r in exact)
