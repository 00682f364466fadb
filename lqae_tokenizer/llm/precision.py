"""The arithmetic an ImageLM reads and draws in: float32, or bf16 autocast with the weights cast once per call.

``torch.autocast`` casts every Linear layer's float32 weight to bf16 again at every forward pass. Drawing
runs one pass per generated token (~130 for a 64-word drawing), and on a CPU a pass over a few rows is
bound by reading the weights, so those casts read 4 bytes and write 2 for each weight byte the bf16
matmul then reads: bf16 drawing was slower than float32. :func:`bf16_linear_weights` casts each Linear
weight once for the whole call and puts the float32 ones back after it; the matmuls see the very same
bf16 values autocast would have made (round to nearest even), so scores and drawings are unchanged
(tested), and nothing is kept between calls that could go stale when the weights change.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device`` (``"auto"``: on CUDA only)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


@contextlib.contextmanager
def bf16_linear_weights(model: torch.nn.Module) -> Iterator[int]:
    """Inside the block every float32 ``nn.Linear`` weight of ``model`` (LoRA's own low-rank layers
    excepted: they are folded in, or small) is replaced by a bf16 copy; the float32 parameters are put
    back on exit, also after an error. A weight tied to the input embeddings (the LM head of most small
    LMs) is untied only inside the block: the embedding lookup keeps reading float32.

    Yields the number of weights cast. Meant for ``torch.autocast(dtype=torch.bfloat16)``, which then
    casts nothing; outside autocast the layers would compute in bf16 and fail on float32 inputs.
    Not safe for two threads using the same model at once.
    """
    swapped: list[tuple[torch.nn.Linear, torch.nn.Parameter]] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name \
                    and module.weight.dtype == torch.float32:
                swapped.append((module, module.weight))
                module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
        yield len(swapped)
    finally:
        for module, weight in swapped:
            module.weight = weight


@contextlib.contextmanager
def read_precision(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """The context an ImageLM runs its LM in: nothing for float32; bf16 autocast on the model's device
    with its Linear weights cast once (:func:`bf16_linear_weights`) for bf16."""
    device = next(model.parameters()).device
    if not uses_bf16(precision, device):
        yield
        return
    with bf16_linear_weights(model), torch.autocast(device.type, dtype=torch.bfloat16):
        yield
