"""The Triton kernel compiled for real GPU targets on this CPU-only machine: every autotune config
of every input dtype for sm_90 (H100/H200) and sm_80 (A100) must compile, fit the target's shared
memory, and pipeline its loads (asynchronous copies) into tensor-core instructions.

The interpreter tests cannot see any of this: they never compile, allocate shared memory or pipeline.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# Triton and the kernel are imported only in the subprocess: importing them here, before the
# interpreter tests set TRITON_INTERPRET=1, would fix their mode for the whole test session.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # opt-in dynamic shared memory per block


@pytest.fixture(scope="module")
def output() -> list[dict]:
    script = Path(__file__).with_name("compile_kernel.py")
    result = subprocess.run([sys.executable, str(script), "90", "80"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def compiled(output) -> list[dict]:
    return [r for r in output if "sm" in r and not r["flatten"]]


@pytest.fixture(scope="module")
def flattened(output) -> list[dict]:
    return [r for r in output if "sm" in r and r["flatten"]]


def test_every_config_dtype_and_metric_compiles_for_sm90_and_sm80(output, compiled):
    configs = output[0]["autotune_configs"]  # element size -> the autotuner's configs
    per_target = sum(len(configs["2" if d != "float32" else "4"]) + 2 for d in
                     ("float32", "bfloat16", "float16")) + 1  # + the other metrics, + IEEE fp32
    assert len(compiled) == 2 * per_target
    for sm in (90, 80):
        seen = {(r["dtype"], tuple(r["config"].values())) for r in compiled if r["sm"] == sm}
        for dtype, size in (("float32", "4"), ("bfloat16", "2"), ("float16", "2")):
            for config in configs[size]:
                assert (dtype, tuple(config.values())) in seen


def test_shared_memory_fits_each_target(compiled):
    too_big = [(r["sm"], r["dtype"], r["config"], r["shared"]) for r in compiled if r["shared"] > SHARED_LIMIT[r["sm"]]]
    assert not too_big, f"configs needing more shared memory than the target has: {too_big}"


def test_loads_are_pipelined_into_tensor_cores(compiled):
    for r in compiled:
        assert r["async_copy"], f"no asynchronous copies (loads not pipelined): {r}"
        tensor_cores = r["dtype"] != "float32" or r["precision"] == "tf32"
        if tensor_cores:
            assert r["wgmma" if r["sm"] == 90 else "mma"], f"no tensor-core instructions: {r}"
        assert r["cubin_bytes"] > 0


def test_the_flattened_loop_experiment_compiles_pipelined_onto_tensor_cores(flattened):
    # FLATTEN=True is what benchmarks/sweep_kernel.py times on a GPU; it must at least build and fit.
    assert {r["sm"] for r in flattened} == {90, 80}
    for r in flattened:
        assert r["shared"] <= SHARED_LIMIT[r["sm"]], r
        assert r["async_copy"] and r["wgmma" if r["sm"] == 90 else "mma"], r
