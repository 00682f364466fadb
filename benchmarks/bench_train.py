"""Training throughput: one optimiser step (forward, backward, AdamW) in images/s and model FLOP utilisation.

    python benchmarks/bench_train.py --preset tiny --batch-sizes 32 128          # CPU
    python benchmarks/bench_train.py --preset paper --device cuda --batch-sizes 64 256 --precision bf16

The language model is randomly initialised with the real shapes (roberta-base for "paper", a small
RoBERTa for "tiny") next to roberta-base's real tokenizer, so no download is needed; speed does not
depend on weight values. Synthetic pixels, masks at the config's ratio. FLOPs counted per image:
encoder and decoder forward + backward (3x forward), the frozen LM forward + input-gradient backward
(2x forward), the exact codebook search (2*N*V*D, forward only) and the MLM head on masked tokens
(3x). MFU is against a bf16 (GPU) or fp32 (CPU) matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lqae_tokenizer import ImageTokenizer, LQAEConfig

TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "data" / "roberta-base-tokenizer"
LM_SHAPES = {"paper": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
             # "demo": a RoBERTa of all-MiniLM-L6-v2's shape (the demo's real LM is not needed for speed).
             "demo": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
             "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)}


def make_lm(folder: Path, preset: str) -> Path:
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1, **LM_SHAPES[preset])
    RobertaForMaskedLM(config).save_pretrained(folder)
    for name in ("merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"):
        shutil.copy(TOKENIZER / name, folder / name)
    return folder


def transformer_flops(tokens: int, width: int, layers: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``layers`` pre-norm blocks on ``tokens`` tokens of ``width``."""
    per_layer = 2 * tokens * (4 * width**2 + 2 * mlp_ratio * width**2) + 4 * tokens**2 * width
    return layers * per_layer


def component_flops(config: LQAEConfig, lm_width: int, lm_layers: int, lm_mlp: int, vocab: int) -> dict[str, float]:
    """Forward FLOPs per image of each part: encoder, decoder, lm, search (``vocab`` rows), mlm head."""
    n, p = config.tokens_per_image, config.patch_size
    encoder = transformer_flops(n, config.encoder_width, config.encoder_depth, config.mlp_ratio)
    encoder += 2 * n * 3 * p * p * config.encoder_width
    decoder = transformer_flops(n, config.decoder_width, config.decoder_depth, config.mlp_ratio)
    decoder += 2 * n * config.decoder_width * 3 * p * p
    lm = transformer_flops(n, lm_width, lm_layers, lm_mlp / lm_width)
    search = 2 * n * vocab * lm_width
    # The MLM head runs on masked tokens only when its loss term is on.
    mlm = 2 * int(n * config.mask_ratio) * (lm_width**2 + lm_width * vocab) if config.mlm_loss_weight > 0 else 0
    return {"encoder": encoder, "decoder": decoder, "lm": lm, "search": search, "mlm": mlm}


def flops_per_image(config: LQAEConfig, lm_width: int, lm_layers: int, lm_mlp: int, vocab: int) -> float:
    """One training step's FLOPs per image (forward + backward)."""
    f = component_flops(config, lm_width, lm_layers, lm_mlp, vocab)
    return 3 * (f["encoder"] + f["decoder"]) + 2 * f["lm"] + f["search"] + 3 * f["mlm"]


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    for _ in range(2):
        a @ a
    sync(device)
    start = time.perf_counter()
    reps = 10 if device.type == "cuda" else 2
    for _ in range(reps):
        a @ a
    sync(device)
    return reps * 2 * 4096**3 / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(tok: ImageTokenizer, batch: int, precision: str, steps: int) -> tuple[float, float]:
    """Median seconds per optimiser step, peak memory in GiB (CUDA) or 0."""
    model, device = tok.model, tok.device
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=5e-4)
    pixels = torch.rand(batch, 3, tok.image_size, tok.image_size, device=device)
    mask = torch.rand(batch, tok.tokens_per_image, device=device) < model.config.mask_ratio
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 2):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(pixels, mask=mask)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(LM_SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        lm = make_lm(Path(tmp) / "lm", args.preset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = ImageTokenizer(LQAEConfig.from_preset(args.preset, language_model=str(lm)), device=device)
    shapes = LM_SHAPES[args.preset]
    flops = flops_per_image(tok.config, shapes["hidden_size"], shapes["num_hidden_layers"],
                            shapes["intermediate_size"], tok.vocab_size)
    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name} | preset {args.preset} | {args.precision} | {flops / 1e9:.1f} GFLOP per image | "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s | median of {args.steps} steps")
    print("| batch | s/step | images/s | model TFLOP/s | MFU | peak GiB |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        seconds, mem = measure(tok, batch, args.precision, args.steps)
        achieved = flops * batch / seconds
        print(f"| {batch} | {seconds:.4f} | {batch / seconds:.1f} | {achieved / 1e12:.3f} | {achieved / peak:.1%} | {mem:.1f} |")


if __name__ == "__main__":
    main()
