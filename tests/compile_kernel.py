"""Compile the nearest-code kernel for a GPU target on a machine without one (no driver needed).

Run as a script by tests/test_kernel_compile.py (in its own process, so that the CPU interpreter
mode other tests switch on does not apply): prints one JSON line per compiled variant with the
shared memory it needs and what its PTX contains. Specialisation is the runtime's for contiguous
inputs: 16-byte aligned pointers and D divisible by 16 (D = 768).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
warnings.simplefilter("ignore")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import CUDABackend  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from lqae_tokenizer.kernels import nearest_code_triton as kernel  # noqa: E402

TYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
SIZES = {"float32": 4, "bfloat16": 2, "float16": 2}


def compile_variant(capability: int, dtype: str, config, metric: str, precision: str, flatten: bool = False) -> dict:
    target = GPUTarget("cuda", capability, 32)
    backend = CUDABackend(target)
    t = TYPES[dtype]
    signature = {"x_ptr": f"*{t}", "c_ptr": f"*{t}", "aux_ptr": "*fp32", "best_ptr": "*fp32",
                 "best_id_ptr": "*i32", "second_ptr": "*fp32", "N": "i32", "V": "i32", "D": "i32",
                 "N_BUCKET": "i32", "METRIC": "constexpr", "INPUT_PRECISION": "constexpr",
                 "UPCAST": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
                 "FLATTEN": "constexpr"}
    constants = {"METRIC": kernel.METRIC_IDS[metric], "INPUT_PRECISION": precision, "UPCAST": False, "FLATTEN": flatten,
                 **config.kwargs}
    aligned = backend.parse_attr("D")  # divisible by 16
    attrs = {(kernel.nearest_code_kernel.arg_names.index(name),): aligned for name in
             ("x_ptr", "c_ptr", "aux_ptr", "best_ptr", "best_id_ptr", "second_ptr", "D")}
    compiled = triton.compile(ASTSource(kernel.nearest_code_kernel, signature, constants, attrs), target=target,
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    ptx = compiled.asm["ptx"]
    return {"sm": capability, "dtype": dtype, "metric": metric, "precision": precision, "config": config.kwargs,
            "flatten": flatten,
            "num_warps": config.num_warps, "num_stages": config.num_stages, "shared": compiled.metadata.shared,
            "async_copy": "cp.async" in ptx, "wgmma": "wgmma" in ptx, "mma": "mma.sync" in ptx,
            "cubin_bytes": len(compiled.asm["cubin"])}


def main(capabilities: list[int]) -> None:
    configs = {size: [c.kwargs for c in cs] for size, cs in kernel.AUTOTUNE_CONFIGS.items()}
    print(json.dumps({"autotune_configs": configs}), flush=True)
    for capability in capabilities:
        for dtype in TYPES:
            configs = kernel.AUTOTUNE_CONFIGS[SIZES[dtype]]
            precision = "tf32"
            for i, config in enumerate(configs):
                metrics = ("cosine", "dot", "l2") if i == 0 else ("cosine",)
                for metric in metrics:
                    print(json.dumps(compile_variant(capability, dtype, config, metric, precision)), flush=True)
            if dtype == "float32":  # IEEE fp32: no tensor cores, same tiles
                print(json.dumps(compile_variant(capability, dtype, configs[0], "cosine", "ieee")), flush=True)
            if dtype == "bfloat16":  # the flattened-loop experiment of benchmarks/sweep_kernel.py
                for config in configs[:2]:
                    print(json.dumps(compile_variant(capability, dtype, config, "cosine", precision, flatten=True)),
                          flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [90, 80])
