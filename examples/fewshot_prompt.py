"""Few-shot image classification with image text: build the paper's prompt, score it with any causal LM.

    python examples/fewshot_prompt.py                               # demo tokenizer, bundled Fashion-MNIST images
    python examples/fewshot_prompt.py --model ./my-tokenizer --llm ./some-causal-lm --episodes 100

Prints one 5-way 1-shot prompt, then the accuracy of the nearest-class-mean classifier on the LM's
features (no LLM needed) over many episodes, and, with --llm, of the LLM scoring each label.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from lqae_tokenizer.evaluation import build_prompt, nearest_class_mean_accuracy, sample_episodes, score_labels

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "fashion-mnist-320"
NAMES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer checkpoint (default: the bundled demo)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with images and labels.csv (file,label)")
    parser.add_argument("--llm", help="causal LM (Hub id or folder) to score labels with")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--shots", type=int, default=1)
    args = parser.parse_args()

    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import load_demo

    tok = ImageTokenizer.from_pretrained(args.model) if args.model else load_demo("fashion-mnist")
    rows = list(csv.DictReader(open(args.data / "labels.csv")))
    paths = [args.data / r["file"] for r in rows]
    labels = [int(r["label"]) for r in rows]
    texts = tok.to_text(paths)
    episodes = sample_episodes(labels, n_way=5, k_shot=args.shots, n_query=5, episodes=args.episodes, seed=0)

    ep = episodes[0]
    prompt = build_prompt([texts[i] for i in ep.support], [NAMES[ep.classes[c]] for c in ep.support_labels],
                          texts[ep.query[0]])
    print(prompt, f"   <- true label: {NAMES[ep.classes[ep.query_labels[0]]]}\n")

    acc, ci = nearest_class_mean_accuracy(tok.features(paths), episodes)
    print(f"nearest class mean, 5-way {args.shots}-shot, {len(episodes)} episodes: {acc:.3f} +- {ci:.3f} (chance 0.2)")
    if args.llm:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        llm, llm_tok = AutoModelForCausalLM.from_pretrained(args.llm), AutoTokenizer.from_pretrained(args.llm)
        correct = total = 0
        for ep in episodes:
            support = ([texts[i] for i in ep.support], [NAMES[ep.classes[c]] for c in ep.support_labels])
            candidates = [NAMES[c] for c in ep.classes]
            for q, truth in zip(ep.query, ep.query_labels):
                scores = score_labels(llm, llm_tok, build_prompt(*support, texts[q]), candidates)
                correct += int(max(range(len(scores)), key=scores.__getitem__) == truth)
                total += 1
        print(f"{args.llm}, 5-way {args.shots}-shot: {correct / total:.3f} over {total} queries")


if __name__ == "__main__":
    main()
