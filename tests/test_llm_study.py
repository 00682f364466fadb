"""The pieces of experiments/llm_study.py that RESULTS.md's probe numbers and arm comparisons rest on:
the word features of the probes, and which training images an arm's text holds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import ROBERTA_TOKENIZER
from transformers import AutoTokenizer

pytest.importorskip("peft")
STUDY = Path(__file__).resolve().parents[1] / "experiments" / "llm_study.py"
spec = importlib.util.spec_from_file_location("llm_study", STUDY)
llm_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(llm_study)


def test_one_hot_words_marks_each_position_and_sends_unseen_ids_to_one_column():
    vocab = {7: 0, 9: 1}  # ids seen in training
    rows = [{"ids": [7, 9, 7]}, {"ids": [9, 42, 7]}]
    x = llm_study.one_hot_words(rows, vocab).reshape(2, 3, 3)
    expected = torch.tensor([[[1, 0, 0], [0, 1, 0], [1, 0, 0]],
                             [[0, 1, 0], [0, 0, 1], [1, 0, 0]]], dtype=x.dtype)
    assert torch.equal(x, expected)
    # Every position has exactly one mark: the probe sees the word and where it stands.
    assert torch.equal(x.sum(-1), torch.ones(2, 3))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_arm_records_are_the_bundled_subset_or_the_arm_folder(tmp_path):
    rows = [{"path": f"fm/train/{i % 10}/{i:05d}.png", "ids": [i]} for i in range(50)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    for split in ("dev", "final"):
        write_jsonl(tmp_path / f"{split}.jsonl", [{"path": f"fm/test/0/0{split}.png", "ids": [1]}])
    with pytest.raises(SystemExit, match="has no holdout.jsonl: write the splits"):
        llm_study.arm_records(tmp_path, None, 20)  # a work folder from before the holdout split
    write_jsonl(tmp_path / "holdout.jsonl", [{"path": "fm/test/0/03000.png", "ids": [1]}])
    train, tests = llm_study.arm_records(tmp_path, None, 20)
    assert train == llm_study.select_images(rows, 20, 0) and sorted(tests) == ["dev", "final", "holdout"]
    # Nested subsets: the first 10 of the 20 are the 10 a smaller run trains on.
    assert llm_study.arm_records(tmp_path, None, 10)[0] == train[:10]

    (tmp_path / "vq").mkdir()
    write_jsonl(tmp_path / "vq" / "train.jsonl", train)
    for split in llm_study.SPLITS:
        write_jsonl(tmp_path / "vq" / f"{split}.jsonl", [{"path": "x", "ids": [2]}])
    assert llm_study.arm_records(tmp_path, "vq", 20)[0] == train
    with pytest.raises(SystemExit, match="holds 20 training images, not 30"):
        llm_study.arm_records(tmp_path, "vq", 30)


def test_one_token_words_are_distinct_single_llm_tokens():
    roberta_tokenizer = AutoTokenizer.from_pretrained(ROBERTA_TOKENIZER)
    # roberta's byte-level BPE stands in for SmolLM2's: the rule is the same (one token after a space).
    candidates = ["the", "Paris", "cat", "antidisestablishmentarianism", "##ing", "dog", "house", "3", "sun"]
    ids = [40, 7, 1234]
    words = llm_study.one_token_words(ids, candidates, roberta_tokenizer)
    assert list(words) == ids and len(set(words.values())) == len(ids)
    for word in words.values():
        assert word.isalpha() and word.islower()
        assert len(roberta_tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1
    assert "antidisestablishmentarianism" not in words.values()  # several tokens: never chosen
    with pytest.raises(SystemExit, match="8 distinct ids but only"):
        llm_study.one_token_words(list(range(8)), candidates, roberta_tokenizer)


def test_draw_losses_batch_equals_each_label_scored_alone(tmp_path):
    """drawscore's batched, right-padded losses against a plain per-label loop (unpadded, one row)."""
    from conftest import make_random_lm

    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm import PromptFormat

    model, tok = load_causal_lm(str(make_random_lm(tmp_path, "llama")))
    labels = ["coat", "ankle boot", "T-shirt"]  # prompts of different lengths, so rows are padded
    text = "dye florence a dyed dye tree"
    for fmt in (PromptFormat(), PromptFormat(words_per_line=4)):
        fast = llm_study.draw_losses(model, tok, fmt, labels, text)
        expected = []
        for label in labels:
            prompt = tok(fmt.draw_prompt(label), add_special_tokens=False)["input_ids"]
            answer = fmt.draw_answer_ids(tok, text) + [tok.eos_token_id]
            with torch.no_grad():
                logits = model(torch.tensor([prompt + answer])).logits[0]
            expected.append(torch.nn.functional.cross_entropy(logits[len(prompt) - 1:-1], torch.tensor(answer)))
        torch.testing.assert_close(fast, torch.stack(expected), rtol=1e-4, atol=1e-4)


def test_the_pixel_judge_loaded_from_its_cache_is_the_one_trained(tmp_path, monkeypatch):
    """The drawing judge and words_report share a cached CNN: the cached one must be the very net a
    fresh seeded training gives, and a cache hit must not read the data again."""
    g = torch.Generator().manual_seed(0)
    splits = {"train": (torch.randint(0, 256, (64, 28, 28), generator=g, dtype=torch.uint8).numpy(),
                        torch.randint(0, 10, (64,), generator=g).numpy()),
              "test": (torch.randint(0, 256, (10_000, 28, 28), generator=g, dtype=torch.uint8).numpy(),
                       torch.randint(0, 10, (10_000,), generator=g).numpy())}
    monkeypatch.setattr(llm_study, "read_split", lambda name: splits[name])
    cache = tmp_path / "judge-seed0.pt"
    trained, accuracy = llm_study.pixel_classifier(seed=0, epochs=1, cache=cache)
    again, _ = llm_study.pixel_classifier(seed=0, epochs=1)  # no cache: the same seeded training
    probe = torch.rand(5, 1, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(trained(probe), again(probe))

    def no_data(name):
        raise AssertionError("a cache hit read the data")

    monkeypatch.setattr(llm_study, "read_split", no_data)
    loaded, loaded_accuracy = llm_study.pixel_classifier(seed=0, epochs=1, cache=cache)
    assert not loaded.training and loaded_accuracy == accuracy
    with torch.no_grad():
        assert torch.equal(loaded(probe), trained(probe))


def test_words_report_writes_one_reader_text_per_image_that_reads_back(word_tokenizer):
    """The reader's text of a batch of ids: one string per image, each reading back to its ids (the
    report once passed the whole batch to ids_to_text, which takes one image)."""
    import sys

    sys.path.insert(0, str(STUDY.parent))
    import words_report

    ids = torch.tensor(word_tokenizer.encode(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))))
    texts = words_report.reader_texts(word_tokenizer, ids)
    assert len(texts) == 3
    assert [word_tokenizer.from_text(t) for t in texts] == ids.tolist()


def test_paired_difference_against_a_hand_count():
    # 4 images: a right on 3, b right on 2; per-image differences [0, 1, 0, 0]: mean 0.25, sample variance 0.25.
    mean, half = llm_study.paired_difference([True, True, False, True], [True, False, False, True])
    assert mean == pytest.approx(0.25) and half == pytest.approx(1.96 * (0.25 / 4) ** 0.5)
    assert llm_study.paired_difference([True, False], [True, False]) == (0.0, 0.0)  # same answers: no difference
    with pytest.raises(ValueError, match="same images"):
        llm_study.paired_difference([True], [True, False])


def test_compare_pairs_two_arms_by_image_and_refuses_different_images(tmp_path, capsys):
    # Two arms' texts of the same three images (labels from the folder names: 0 T-shirt, 1 trouser).
    paths = ["t/test/0/06000.png", "t/test/1/06001.png", "t/test/1/06002.png"]
    results = tmp_path / "results"
    results.mkdir()
    for arm, predictions in (("a", ["T-shirt", "trouser", "trouser"]), ("b", ["T-shirt", "T-shirt", "trouser"])):
        write_jsonl(tmp_path / f"{arm}.jsonl", [{"path": p, "text": f"w{k}"} for k, p in enumerate(paths)])
        (results / f"read-{arm}.json").write_text(json.dumps({"data": str(tmp_path / f"{arm}.jsonl"),
                                                              "predictions": predictions}))
    llm_study.cmd_compare(type("Args", (), {"work": tmp_path, "a": "read-a.json", "b": "read-b.json"}))
    assert "1.000 - read-b.json 0.667 = +0.333" in capsys.readouterr().out
    write_jsonl(tmp_path / "b.jsonl", [{"path": p, "text": "w"} for p in reversed(paths)])
    with pytest.raises(SystemExit, match="same images in the same order"):
        llm_study.cmd_compare(type("Args", (), {"work": tmp_path, "a": "read-a.json", "b": "read-b.json"}))


def test_draw_reference_must_be_the_drawing_tokenizers_own_ids(word_tokenizer, tmp_path):
    """draw once decoded the study folder's final.jsonl (the `fashion-mnist` tokenizer's ids) whatever
    tokenizer drew, which gives noise for another codebook; the reference is now checked."""
    own = word_tokenizer.encode(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    rows = [{"path": f"test/0/{i}.png", "ids": list(map(int, ids))} for i, ids in enumerate(own)]
    assert llm_study.reference_ids(word_tokenizer, rows, tmp_path / "x.jsonl").tolist() == [r["ids"] for r in rows]
    outside = int(max(word_tokenizer.codebook_ids)) + 1
    foreign = [dict(rows[0], ids=[outside] * word_tokenizer.tokens_per_image)]
    with pytest.raises(SystemExit, match="not all in the drawing tokenizer's codebook.*pass --data"):
        llm_study.reference_ids(word_tokenizer, foreign, tmp_path / "x.jsonl")
    with pytest.raises(SystemExit, match="pass --data"):
        llm_study.reference_ids(word_tokenizer, [dict(rows[0], ids=rows[0]["ids"][:-1])], tmp_path / "x.jsonl")


def test_splits_from_the_prepared_folder_follow_lqae_tokenizes_order_and_the_index_ranges(tmp_path):
    """``splits --fashion`` needs no tokenize run: the training records come in the order ``lqae-tokenize``
    reads the folder (the order ``--max-images``' seeded subsets index into), and each test image lands in
    the split its file's index names."""
    import argparse

    from PIL import Image

    from lqae_tokenizer.cli.sources import expand_inputs

    fm = tmp_path / "fm"
    names = {"train": ["1/00000.png", "0/00010.png", "0/00001.png", "9/59999.png"],
             "test": ["3/06000.png", "0/03001.png", "2/08500.png", "1/00005.png", "4/06999.png", "5/07000.png"]}
    for split, files in names.items():
        for name in files:
            (fm / split / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (28, 28)).save(fm / split / name)
    work = tmp_path / "study"
    llm_study.cmd_splits(argparse.Namespace(work=work, fashion=fm, train=None, test=None))

    train = llm_study.records(work / "train.jsonl")
    assert [r["path"] for r in train] == expand_inputs([str(fm / "train")])
    assert [r["index"] for r in train] == [1, 10, 0, 59999]  # by folder (the label), then by file
    got = {split: [r["index"] for r in llm_study.records(work / f"{split}.jsonl")] for split in llm_study.SPLITS}
    assert got == {"dev": [6000, 6999], "final": [8500], "holdout": [3001]}

    with pytest.raises(SystemExit, match="either --fashion .* or both --train and --test"):
        llm_study.cmd_splits(argparse.Namespace(work=work, fashion=fm, train=work / "train.jsonl", test=None))
    with pytest.raises(SystemExit, match="either --fashion"):
        llm_study.cmd_splits(argparse.Namespace(work=work, fashion=None, train=work / "train.jsonl", test=None))
