"""lqae_tokenizer.llm: the prompt format, generation constrained to codebook words, the ImageLM folder
round trip, the per-example loss and a tiny Trainer + peft run, with a small random causal LM over
roberta-base's real tokenizer and the bundled fashion-mnist image tokenizer (real MiniLM words)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")

from lqae_tokenizer.llm import CodebookWordsProcessor, ImageLM, PromptFormat, WordTrie, check_labels  # noqa: E402
from lqae_tokenizer.llm.data import (IGNORE, LabelledText, PadCollator, build_examples,  # noqa: E402
                                     per_example_loss, read_labelled_text)

from conftest import DATA, make_random_lm  # noqa: E402

FASHION = DATA / "fashion-mnist-320"
NAMES = {"0": "T-shirt", "1": "trouser", "2": "pullover", "3": "dress", "4": "coat", "5": "sandal", "6": "shirt",
         "7": "sneaker", "8": "bag", "9": "boot"}


@pytest.fixture(scope="module")
def image_lm(causal_lm_dir, fashion_tokenizer):
    from lqae_tokenizer.evaluation import load_causal_lm

    model, llm_tokenizer = load_causal_lm(str(causal_lm_dir))
    return ImageLM(fashion_tokenizer, model, llm_tokenizer, list(NAMES.values()), language_model=str(causal_lm_dir),
                   image_tokenizer_name="fashion-mnist")


def fashion_records(count_per_class: int) -> list[tuple[Path, str]]:
    rows = [line.split(",") for line in (FASHION / "labels.csv").read_text().split()[1:]]
    by_class: dict[str, list[Path]] = {}
    for name, label in rows:
        by_class.setdefault(label, []).append(FASHION / name)
    return [(path, label) for label, paths in sorted(by_class.items()) for path in paths[:count_per_class]]


# -- prompt format ---------------------------------------------------------------------------------
def test_prompt_format_is_the_papers_both_ways():
    fmt = PromptFormat()
    assert fmt.read_prompt("  dye  florence dye ") == "input: dye florence dye output:"
    assert fmt.draw_prompt("coat") == "output: coat input:"
    assert PromptFormat.from_dict(fmt.to_dict()) == fmt
    with pytest.raises(ValueError, match="must contain"):
        PromptFormat.from_dict({"read": "{words}", "draw": "output: {label} input:"})


def test_grid_rows_layout_keeps_each_words_tokens_and_breaks_lines_after_every_w_words(causal_lm_dir):
    from transformers import AutoTokenizer

    from lqae_tokenizer.llm.prompt import newline_id

    tok = AutoTokenizer.from_pretrained(causal_lm_dir)
    fmt = PromptFormat(words_per_line=2)
    words = " dye florence  a dyed\tdye "
    assert fmt.lines(words) == ["dye florence", "a dyed", "dye"]
    assert fmt.read_prompt(words) == "input: dye florence\n a dyed\n dye output:"
    ids = fmt.draw_answer_ids(tok, words)
    nl = newline_id(tok)
    # Independent expectation: each word's tokens with its leading space, a newline after words 2 and 4.
    expected = []
    for k, word in enumerate(words.split()):
        expected += ([nl] if k in (2, 4) else []) + tok(" " + word, add_special_tokens=False)["input_ids"]
    assert ids == expected
    # One line: exactly the old format's tokens.
    assert PromptFormat().draw_answer_ids(tok, words) == tok(" dye florence a dyed dye", add_special_tokens=False)["input_ids"]
    draw = build_examples([LabelledText(words, "coat")], tok, ("draw",), fmt)[0]
    answer = [t for t in draw["labels"] if t != IGNORE]
    assert answer == expected + [tok.eos_token_id]
    assert PromptFormat.from_dict(fmt.to_dict()) == fmt and fmt.to_dict()["words_per_line"] == 2
    assert "words_per_line" not in PromptFormat().to_dict()  # one-line folders keep their file
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="words_per_line must be"):
            PromptFormat(words_per_line=bad)


def test_labels_must_be_told_apart(causal_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_lm_dir)
    check_labels(tok, list(NAMES.values()))
    with pytest.raises(ValueError, match="prefix"):
        check_labels(tok, ["bag", "bag pack"])
    with pytest.raises(ValueError, match="distinct"):
        check_labels(tok, ["coat", "coat"])
    with pytest.raises(ValueError, match="one-line"):
        check_labels(tok, ["coat", "two\nlines"])


# -- constrained generation ------------------------------------------------------------------------
def test_trie_splits_words_and_refuses_ambiguous_words(causal_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_lm_dir)
    trie = WordTrie(tok, ["dye", "dyed", "florence", "a"])
    tokens = tok(" dyed a florence dye", add_special_tokens=False)["input_ids"]
    assert trie.split_words(tokens) == ["dyed", "a", "florence", "dye"]
    with pytest.raises(ValueError, match="does not continue"):
        trie.split_words(tok(" dyed cat", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="leading-space"):
        WordTrie(tok, ["two words"])


def test_processor_allows_only_codebook_continuations_and_ends_after_n_words(causal_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_lm_dir)
    trie = WordTrie(tok, ["dye", "dyed", "florence"])
    eos = tok.eos_token_id
    processor = CodebookWordsProcessor(trie, n_words=2, prompt_length=1, eos_token_id=eos)
    first = {t for t in trie.children[0]}

    def allowed_after(generated: list[int]) -> set[int]:
        scores = processor(torch.tensor([[5] + generated]), torch.zeros(1, len(tok)))
        return set(torch.isfinite(scores[0]).nonzero().flatten().tolist())

    assert allowed_after([]) == first                                   # a word must start; no end yet
    dye = tok(" dye", add_special_tokens=False)["input_ids"]
    after_one = allowed_after(dye)
    assert eos not in after_one and first <= after_one                 # one word: go on
    two = dye + tok(" florence", add_special_tokens=False)["input_ids"]
    assert allowed_after(two) == {eos}                                  # two words: only the end


def test_processor_writes_a_newline_after_every_row_and_nowhere_else(causal_lm_dir):
    from transformers import AutoTokenizer

    from lqae_tokenizer.llm.prompt import newline_id

    tok = AutoTokenizer.from_pretrained(causal_lm_dir)
    trie = WordTrie(tok, ["dye", "dyed", "florence"])
    eos, nl = tok.eos_token_id, newline_id(tok)
    processor = CodebookWordsProcessor(trie, n_words=4, prompt_length=1, eos_token_id=eos, words_per_line=2,
                                       newline_id=nl)
    first = set(trie.children[0])
    word = lambda w: tok(" " + w, add_special_tokens=False)["input_ids"]  # noqa: E731

    def allowed_after(generated: list[int]) -> set[int]:
        scores = processor(torch.tensor([[5] + generated]), torch.zeros(1, len(tok)))
        return set(torch.isfinite(scores[0]).nonzero().flatten().tolist())

    def continuations(w: str) -> set[int]:  # tokens that make the word w longer ("dye" -> "dyed")
        node = 0
        for t in word(w):
            node = trie.step(node, t)[0]
        return set(trie.children[node])

    one = word("florence")
    assert allowed_after(one) == first | continuations("florence")       # inside a row: the next word
    two = one + word("dye")
    assert allowed_after(two) == {nl} | continuations("dye")             # the row ends: newline, no new word
    assert allowed_after(two + [nl]) == first                             # after the break: only a word
    four = two + [nl] + word("dyed") + word("florence")
    assert allowed_after(four) == {eos} | continuations("florence")      # the last word: only the end
    assert processor.max_new_tokens() == trie.max_tokens(4) + 1
    with pytest.raises(ValueError, match="newline_id"):
        CodebookWordsProcessor(trie, n_words=4, prompt_length=1, eos_token_id=eos, words_per_line=2)


def test_grid_rows_drawings_decode_even_when_the_lm_wants_line_breaks_everywhere(causal_lm_dir, fashion_tokenizer):
    """The LM is made to prefer a newline above everything: it may only appear at the 7 row ends."""
    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm.prompt import newline_id

    model, llm_tok = load_causal_lm(str(causal_lm_dir))
    nl = newline_id(llm_tok)
    with torch.no_grad():
        model.lm_head.weight[nl] = 50.0 * model.model.norm.weight.sign()
    lm = ImageLM(fashion_tokenizer, model, llm_tok, ["coat", "bag"], prompt=PromptFormat(words_per_line=8),
                 language_model=str(causal_lm_dir), image_tokenizer_name="fashion-mnist")
    ids = lm.draw_ids("bag", 3, seed=0)
    assert ids.shape == (3, 64)
    assert set(ids.flatten().tolist()) <= set(fashion_tokenizer.codebook_ids.tolist())
    # draw_ids checks that the generated tokens are exactly draw_answer_ids of the words drawn (it raises
    # otherwise); that layout has 8 rows, so 7 breaks.
    assert lm.prompt.draw_answer_ids(llm_tok, fashion_tokenizer.ids_to_text(ids[0])).count(nl) == 7


@pytest.mark.slow
def test_every_drawing_decodes_into_codebook_words(image_lm):
    codebook = set(image_lm.image_tokenizer.codebook_ids.tolist())
    for seed in (0, 1):
        ids = image_lm.draw_ids("coat", 4, seed=seed, temperature=3.0)
        assert ids.shape == (4, 64)
        assert set(ids.flatten().tolist()) <= codebook
        images = image_lm.image_tokenizer.batch_decode(ids)
        assert len(images) == 4 and images[0].size == (32, 32)
    assert torch.equal(image_lm.draw_ids("coat", 2, seed=7), image_lm.draw_ids("coat", 2, seed=7))
    assert not torch.equal(image_lm.draw_ids("coat", 2, seed=7), image_lm.draw_ids("coat", 2, seed=8))
    with pytest.raises(ValueError, match="unknown label"):
        image_lm.draw("hat")


def test_a_word_outside_the_codebook_is_never_written(causal_lm_dir, fashion_tokenizer):
    """The LM is made to want "," and the end of sequence above everything: neither can appear early."""
    from lqae_tokenizer.evaluation import load_causal_lm

    model, llm_tok = load_causal_lm(str(causal_lm_dir))
    comma = llm_tok(",", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        model.lm_head.weight[comma] = 50.0 * model.model.norm.weight.sign()
        model.lm_head.weight[llm_tok.eos_token_id] = 40.0 * model.model.norm.weight.sign()
    lm = ImageLM(fashion_tokenizer, model, llm_tok, ["coat", "bag"], language_model=str(causal_lm_dir),
                 image_tokenizer_name="fashion-mnist")
    ids = lm.draw_ids("bag", 3, seed=0)
    assert ids.shape == (3, 64)
    assert set(ids.flatten().tolist()) <= set(fashion_tokenizer.codebook_ids.tolist())



def test_label_guidance_equals_the_formula_on_full_passes_of_every_label(causal_lm_dir):
    """The cached, left-padded batch of the other labels gives, at every step, u + s * (c - u) with each
    label's log-probs from one full uncached pass of its prompt + the generated tokens (an oracle)."""
    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm.guidance import LabelGuidanceProcessor
    from lqae_tokenizer.llm.prompt import token_ids

    model, llm_tok = load_causal_lm(str(causal_lm_dir))
    fmt, labels, scale = PromptFormat(), ["bag", "ankle boot", "T-shirt"], 2.5
    prompts = [token_ids(llm_tok, fmt.draw_prompt(label)) for label in labels]
    assert len({len(p) for p in prompts}) > 1  # the padding is exercised
    own, others = prompts[0], prompts[1:]
    processor = LabelGuidanceProcessor(model, others, len(own), scale, pad_token_id=llm_tok.eos_token_id)
    generated = torch.randint(100, 5000, (2, 6), generator=torch.Generator().manual_seed(0))

    def log_probs(prompt, tokens):
        with torch.no_grad():
            return model(torch.tensor([prompt + tokens])).logits[0, -1].double().log_softmax(-1)

    for step in range(generated.shape[1] + 1):
        input_ids = torch.cat([torch.tensor([own] * 2), generated[:, :step]], dim=1)
        with torch.no_grad():
            scores = model(input_ids).logits[:, -1]
        guided = processor(input_ids, scores.clone())
        for row in range(2):
            every = torch.stack([log_probs(p, generated[row, :step].tolist()) for p in prompts])
            marginal = every.logsumexp(0) - torch.log(torch.tensor(3.0, dtype=torch.float64))
            expected = marginal + scale * (every[0] - marginal)
            # guided is a shifted log-softmax: compare after normalising both
            torch.testing.assert_close(guided[row].double().log_softmax(-1), expected.log_softmax(-1),
                                       atol=2e-4, rtol=0)
    assert torch.equal(LabelGuidanceProcessor(model, others, len(own), 1.0)(input_ids, scores), scores)
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance scale"):
            LabelGuidanceProcessor(model, others, len(own), bad)


@pytest.mark.slow
def test_guided_drawings_decode_and_are_seeded(image_lm):
    codebook = set(image_lm.image_tokenizer.codebook_ids.tolist())
    ids = image_lm.draw_ids("coat", 3, seed=4, guidance=3.0)
    assert ids.shape == (3, 64) and set(ids.flatten().tolist()) <= codebook
    assert torch.equal(ids, image_lm.draw_ids("coat", 3, seed=4, guidance=3.0))
    # The random LM barely tells its labels apart: only a large scale moves its samples.
    assert not torch.equal(image_lm.draw_ids("coat", 3, seed=4, guidance=1000.0), image_lm.draw_ids("coat", 3, seed=4))
    with pytest.raises(ValueError, match="guidance scale"):
        image_lm.draw("coat", guidance=0.0)

def read_posterior_by_full_passes(reader, label: str, rows: torch.Tensor) -> torch.Tensor:
    """Oracle: ``float64 [len(rows)]``, log p(label | read prompt) softmaxed over the reader's labels,
    from one full uncached pass per (row, label)."""
    from lqae_tokenizer.llm.prompt import token_ids

    model, tok = reader._base(), reader.llm_tokenizer
    posterior = []
    for row in rows:
        prompt = token_ids(tok, reader.prompt.read_prompt(reader.image_tokenizer.ids_to_text(row)))
        scores = []
        for name in reader.labels:
            answer = token_ids(tok, " " + name)
            with torch.no_grad():
                logp = model(torch.tensor([prompt + answer])).logits[0].double().log_softmax(-1)
            scores.append(sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer)))
        posterior.append(torch.tensor(scores).log_softmax(0)[reader.labels.index(label)])
    return torch.stack(posterior)


def assert_kept_are_the_best_candidates(sampled, kept, posterior, n, k):
    posterior = posterior.view(n, k)
    for group in range(n):
        chosen = [j for j in range(k) if torch.equal(sampled[group * k + j], kept[group])]
        assert chosen, "a kept drawing must be one of its own group's candidates"
        assert float(posterior[group, chosen[0]]) >= float(posterior[group].max()) - 1e-4


@pytest.mark.slow
def test_reranked_drawings_are_the_candidates_the_lm_reads_as_the_label_most_surely(image_lm):
    """Each kept drawing must be its group's best candidate under the oracle's posterior."""
    n, k, label = 2, 3, "coat"
    sampled = image_lm.draw_ids(label, n * k, seed=5)
    kept = image_lm.draw_ids(label, n, seed=5, candidates=k)
    assert kept.shape == (n, 64)
    assert_kept_are_the_best_candidates(sampled, kept, read_posterior_by_full_passes(image_lm, label, sampled), n, k)
    assert torch.equal(image_lm.draw_ids(label, n * k, seed=5, candidates=1), sampled)  # k = 1: plain samples
    with pytest.raises(ValueError, match="candidates >= 1"):
        image_lm.draw(label, candidates=0)
    with pytest.raises(ValueError, match="groups of 4"):
        image_lm.rerank(label, sampled, 4)
    with pytest.raises(ValueError, match="unknown label 'hat'"):
        image_lm.rerank("hat", sampled, k)


@pytest.fixture(scope="module")
def reader_lm(tmp_path_factory, fashion_tokenizer):
    """Another random LM (seed 1) over the same image tokenizer: a second adapter, as a reader."""
    from lqae_tokenizer.evaluation import load_causal_lm

    model, llm_tokenizer = load_causal_lm(str(make_random_lm(tmp_path_factory.mktemp("reader-lm"), "llama", seed=1)))
    return ImageLM(fashion_tokenizer, model, llm_tokenizer, list(NAMES.values()), image_tokenizer_name="fashion-mnist",
                   prompt=PromptFormat(words_per_line=8))


@pytest.mark.slow
def test_another_adapters_reading_picks_the_candidates(image_lm, reader_lm):
    """draw(..., reader=other): the drawer samples, the reader's posterior (its own LM and prompt layout)
    picks; the oracle is the reader's full passes, and the picks must follow the reader, not the drawer."""
    n, k, label = 3, 4, "bag"
    sampled = image_lm.draw_ids(label, n * k, seed=2)
    kept = image_lm.draw_ids(label, n, seed=2, candidates=k, reader=reader_lm)
    theirs = read_posterior_by_full_passes(reader_lm, label, sampled)
    assert_kept_are_the_best_candidates(sampled, kept, theirs, n, k)
    ours = read_posterior_by_full_passes(image_lm, label, sampled).view(n, k).argmax(1)
    assert not torch.equal(ours, theirs.view(n, k).argmax(1)), "two random LMs should disagree somewhere here"
    assert len(image_lm.draw(label, 1, seed=2, candidates=2, reader=reader_lm)) == 1


def test_a_reader_must_read_the_same_words_and_rank_candidates(image_lm, reader_lm):
    """Refused before any sampling: a reader with other codebook words, without the label, not an
    ImageLM, or with candidates = 1 (nothing to rank)."""
    import copy

    with pytest.raises(ValueError, match="pass candidates > 1"):
        image_lm.draw_ids("bag", 1, reader=reader_lm)
    with pytest.raises(TypeError, match="reader must be an ImageLM"):
        image_lm.draw_ids("bag", 1, candidates=2, reader="fashion-mnist-smollm2")
    other_words = copy.copy(reader_lm)
    other_words.word_ids = dict(list(reader_lm.word_ids.items())[:-1])
    with pytest.raises(ValueError, match="another image tokenizer's words"):
        image_lm.draw_ids("bag", 1, candidates=2, reader=other_words)
    fewer_labels = copy.copy(reader_lm)
    fewer_labels.labels = ["T-shirt", "trouser"]
    with pytest.raises(ValueError, match="does not know the label 'bag'"):
        image_lm.draw_ids("bag", 1, candidates=2, reader=fewer_labels)


def test_a_draw_only_adapter_refuses_to_read_and_its_card_says_so(image_lm):
    """An adapter trained with --tasks draw never learnt the read prompt: classify and rerank raise
    (instead of returning guesses), and its card does not claim it classifies."""
    import copy

    drawer = copy.copy(image_lm)
    drawer.training = {"tasks": ["draw"]}
    with pytest.raises(ValueError, match=r"trained for the tasks \['draw'\] only, not to read"):
        drawer.classify(fashion_records(1)[0][0])
    with pytest.raises(ValueError, match="not to read"):
        drawer.rerank("bag", image_lm.image_tokenizer.codebook_ids[:1].repeat(2, 64), 2)
    for ranked_by_a_drawer in (lambda: drawer.draw_ids("bag", 1, candidates=2),
                               lambda: image_lm.draw_ids("bag", 1, candidates=2, reader=drawer)):
        with pytest.raises(ValueError, match="not to read"):
            ranked_by_a_drawer()
    card = drawer.card()
    assert "that draws images as words" in card and "it does not classify" in card and "classifies images" not in card
    reader = copy.copy(image_lm)
    reader.training = {"tasks": ["read"]}
    assert "that reads images as words" in reader.card() and "writes the words" not in reader.card()
    assert "it does not draw" in reader.card() and "it does not draw" not in image_lm.card()
    assert "reads and draws" in image_lm.card()


def test_a_read_only_adapter_refuses_to_draw_but_ranks_a_drawers_samples(image_lm):
    """An adapter trained with --tasks read never learnt the draw prompt: draw raises before sampling
    (instead of returning the base LM's guesses as drawings), with or without candidates, while it still
    ranks another adapter's samples as their reader."""
    import copy

    reader = copy.copy(image_lm)
    reader.training = {"tasks": ["read"]}
    for drawn_by_a_reader in (lambda: reader.draw_ids("bag", 1), lambda: reader.draw("bag", 1),
                              lambda: reader.draw_ids("bag", 1, candidates=2),
                              lambda: reader.check_draw("bag", 1)):
        with pytest.raises(ValueError, match=r"trained for the tasks \['read'\] only, not to draw"):
            drawn_by_a_reader()
    ranked = image_lm.draw_ids("bag", 2, seed=3, candidates=2, reader=reader)
    assert torch.equal(ranked, image_lm.draw_ids("bag", 2, seed=3, candidates=2))  # same words, same reading


# -- data and loss ---------------------------------------------------------------------------------
def test_records_take_labels_from_folders_and_refuse_unknown_names(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text(json.dumps({"path": "fm/train/3/00001.png", "text": " dye  dye"}) + "\n"
                    + json.dumps({"path": "a/b.png", "text": "x", "label": "7"}) + "\n")
    items = read_labelled_text([data], NAMES)
    assert items == [LabelledText("dye dye", "dress"), LabelledText("x", "sneaker")]
    with pytest.raises(ValueError, match="not in the label names"):
        read_labelled_text([data], {"3": "dress"})
    with pytest.raises(FileNotFoundError):
        read_labelled_text([tmp_path / "missing.jsonl"])


def test_per_example_loss_on_kept_logits_equals_the_full_computation(causal_lm_dir):
    from lqae_tokenizer.evaluation import load_causal_lm

    model, tok = load_causal_lm(str(causal_lm_dir))
    items = [LabelledText("dye florence dye", "coat"), LabelledText("a b c d e f", "T-shirt")]
    examples = build_examples(items, tok, ("read", "draw"))
    batch = PadCollator(tok.pad_token_id)(examples)
    assert batch["logits_to_keep"] < batch["input_ids"].shape[1]
    labels = batch.pop("labels")
    with torch.no_grad():
        fast = per_example_loss(model(**batch), labels)
        # Reference: each example alone, unpadded, all logits, mean over its answer tokens.
        expected = []
        for ex in examples:
            logits = model(torch.tensor([ex["input_ids"]])).logits[0, :-1]
            target = torch.tensor(ex["labels"][1:])
            keep = target != IGNORE
            expected.append(torch.nn.functional.cross_entropy(logits[keep], target[keep]))
    torch.testing.assert_close(fast, torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)


# -- saving, loading and training ------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path, causal_lm_dir, fashion_tokenizer):
    from peft import LoraConfig, get_peft_model

    from lqae_tokenizer.evaluation import load_causal_lm

    base, tok = load_causal_lm(str(causal_lm_dir))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lm = ImageLM(fashion_tokenizer, model, tok, ["coat", "bag", "sandal"], language_model=str(causal_lm_dir),
                 image_tokenizer_name="fashion-mnist", training={"images": 3})
    folder = lm.save_pretrained(tmp_path / "lm")
    assert {"image_lm.json", "adapter_config.json", "adapter_model.safetensors", "README.md"} <= \
        {p.name for p in folder.iterdir()}
    assert not (folder / "image_tokenizer").exists()  # the bundled tokenizer is named, not copied
    assert all(p.stat().st_mode & 0o044 for p in [folder, *folder.iterdir()])  # readable like any saved file
    moved = shutil.move(str(folder), str(tmp_path / "elsewhere"))
    loaded = ImageLM.from_pretrained(moved)
    assert loaded.labels == ["coat", "bag", "sandal"] and loaded.training == {"images": 3}
    texts = ["dye florence dye " * 21 + "dye", "a " * 64]
    torch.testing.assert_close(loaded.scores_of_texts(texts), lm.scores_of_texts(texts))
    assert torch.equal(loaded.draw_ids("bag", 2, seed=3), lm.draw_ids("bag", 2, seed=3))


@pytest.mark.slow
def test_cli_draws_with_a_reader_and_refuses_single_task_models_the_other_task(tmp_path, causal_lm_dir,
                                                                               fashion_tokenizer, capsys,
                                                                               monkeypatch):
    from peft import LoraConfig, get_peft_model
    from PIL import Image

    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm.cli import main

    folders = {}
    for seed, (name, tasks) in enumerate((("drawer", ["draw"]), ("reader", ["read"]))):
        base, tok = load_causal_lm(str(causal_lm_dir))
        torch.manual_seed(seed)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        folders[name] = ImageLM(fashion_tokenizer, model, tok, list(NAMES.values()), language_model=str(causal_lm_dir),
                                image_tokenizer_name="fashion-mnist", training={"tasks": tasks}).save_pretrained(tmp_path / name)
    png = tmp_path / "bags.png"
    draw = ["draw", "--model", str(folders["drawer"]), "--label", "bag", "--candidates", "2", "--output", str(png)]
    assert main(draw) == 2
    assert "not to read" in capsys.readouterr().err and not png.exists()  # no PNG of unranked guesses
    image = str(fashion_records(1)[0][0])
    assert main(["classify", "--model", str(folders["drawer"]), image]) == 2
    assert "trained to draw only, not to read" in capsys.readouterr().err
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"path": "x/coat/1.png", "text": fashion_tokenizer.to_text([image])[0]}) + "\n")
    assert main(["evaluate", "--model", str(folders["drawer"]), "--data", str(data)]) == 2
    assert "not to read" in capsys.readouterr().err
    assert main(["classify", "--model", str(folders["reader"]), image]) == 0
    assert capsys.readouterr().out.split(": ")[-1].strip() in NAMES.values()
    by_reader = tmp_path / "by-reader.png"  # the read-only adapter refuses to draw: a usage error, no PNG
    assert main(["draw", "--model", str(folders["reader"]), "--label", "bag", "--output", str(by_reader)]) == 2
    assert "not to draw" in capsys.readouterr().err and not by_reader.exists()
    assert main([*draw, "--reader", str(folders["reader"]), "--n", "2", "--scale", "1"]) == 0
    expected = ImageLM.from_pretrained(folders["drawer"]).draw(
        "bag", 2, candidates=2, reader=ImageLM.from_pretrained(folders["reader"]))
    from lqae_tokenizer.imaging import image_row

    assert Image.open(png).convert("RGB").tobytes() == image_row(expected, scale=1).convert("RGB").tobytes()

    # only the settings' check is a usage error: a ValueError from inside drawing is a bug and keeps its traceback
    def broken_sampler(*args, **kwargs):
        raise ValueError("a bug deep inside sampling")

    monkeypatch.setattr(ImageLM, "_sample_ids", broken_sampler)
    with pytest.raises(ValueError, match="a bug deep inside sampling"):
        main([*draw, "--reader", str(folders["reader"]), "--output", str(tmp_path / "broken.png")])
    assert not (tmp_path / "broken.png").exists()


def test_not_an_image_lm_folder(tmp_path):
    from lqae_tokenizer.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not an ImageLM folder"):
        ImageLM.from_pretrained(tmp_path)



def test_training_data_of_one_class_is_refused_and_leaves_the_output_empty(tmp_path):
    from lqae_tokenizer.llm.training import AdapterTrainingConfig, TrainingSetupError, train_adapter

    data = tmp_path / "one-class.jsonl"
    data.write_text("".join(json.dumps({"path": f"x/coat/{i}.png", "text": "dye " * 64}) + "\n" for i in range(3)))
    config = AdapterTrainingConfig(data=[str(data)], output_dir=str(tmp_path / "run"), progress_bar=False)
    with pytest.raises(TrainingSetupError, match="needs at least two"):
        train_adapter(config)
    assert not (tmp_path / "run").exists()

@pytest.mark.slow
def test_tiny_training_run_with_trainer_and_resume(tmp_path, causal_lm_dir, fashion_tokenizer):
    from dataclasses import asdict

    from lqae_tokenizer.llm.training import AdapterTrainingConfig, train_adapter

    records = fashion_records(2)[:8]  # 4 classes x 2 images
    texts = fashion_tokenizer.to_text([p for p, _ in records])
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"path": f"x/{label}/{p.name}", "text": t}) + "\n"
                            for (p, label), t in zip(records, texts)))
    config = AdapterTrainingConfig(data=[str(data)], output_dir=str(tmp_path / "run"), language_model=str(causal_lm_dir),
                                   label_names=NAMES, epochs=1, batch_size=4, save_steps=2, lora_rank=4,
                                   words_per_line=8, progress_bar=False)
    final = train_adapter(config)
    lm = ImageLM.from_pretrained(final)
    assert lm.labels == list(NAMES.values())
    assert lm.prompt.words_per_line == 8 and lm.training["words_per_line"] == 8  # the layout travels with the folder
    assert lm.training["images"] == 8 and lm.training["examples"] == 16 and lm.training["optimizer_steps"] == 4
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert lm.classify(records[0][0])[0] in NAMES.values()
    assert lm.draw_ids("trouser", 1, seed=0).shape == (1, 64)
    # Resuming a longer run continues from checkpoint-4 instead of starting again.
    config.epochs, config.resume = 2, True
    resumed = ImageLM.from_pretrained(train_adapter(config))
    assert resumed.training["optimizer_steps"] == 8
    assert "resumed_from_step" not in lm.training and resumed.training["resumed_from_step"] == 4
    assert "(resumed at step 4: the seconds are the steps after it)" in resumed.card()
    # Resuming with another layout or task list would train the checkpoint on other examples: refused, named.
    for changed in ({"words_per_line": 0}, {"tasks": ("read",)}):
        other = AdapterTrainingConfig(**{**asdict(config), "epochs": 3, **changed})
        with pytest.raises(ValueError, match=f"settings differ: {next(iter(changed))}"):
            train_adapter(other)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-6", "checkpoint-8"]


@pytest.mark.slow
def test_cli_help_and_usage_errors(tmp_path, capsys):
    from lqae_tokenizer.llm.cli import main

    # As a user runs it (a process: exit code, no traceback); then the same entry point in-process,
    # which is what the process calls (each process start costs seconds).
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.llm.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "draw" in out.stdout
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.llm.cli", "draw", "--model", str(tmp_path), "--label",
                          "coat", "--output", str(tmp_path / "x.jpg")], capture_output=True, text=True)
    assert out.returncode == 2 and "must be a .png" in out.stderr and "Traceback" not in out.stderr

    def run(*argv):
        code = main(list(argv))
        return subprocess.CompletedProcess(argv, code, *capsys.readouterr())

    out = run("evaluate", "--model", str(tmp_path), "--data", "x.jsonl", "--json", "/proc/x.json")
    assert out.returncode == 2 and "cannot write in /proc" in out.stderr
    out = run("train", "--data", "x.jsonl", "--output", "o", "--label-names", "0:coat")
    assert out.returncode == 2 and "RAW=NAME" in out.stderr
    out = run("train", "--data", "x.jsonl", "--output", "o", "--words-per-line", "-1")
    assert out.returncode == 2 and "words_per_line must be" in out.stderr
    out = run("draw", "--model", str(tmp_path), "--label", "coat", "--output", str(tmp_path / "x.png"), "--guidance", "0.5")
    assert out.returncode == 2 and "--guidance must be" in out.stderr
    out = run("draw", "--model", str(tmp_path), "--label", "coat", "--output", str(tmp_path / "x.png"), "--candidates", "0")
    assert out.returncode == 2 and "--candidates must be" in out.stderr
    out = run("draw", "--model", str(tmp_path), "--label", "coat", "--output", str(tmp_path / "x.png"), "--reader", "r")
    assert out.returncode == 2 and "--reader ranks candidates" in out.stderr
    # --resume on a run recorded with another layout: a usage error before anything loads or is written.
    from lqae_tokenizer.llm.training import AdapterTrainingConfig, run_settings

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    recorded = json.dumps(run_settings(AdapterTrainingConfig(data=["x"], output_dir=str(run_dir), words_per_line=8)))
    (run_dir / "run_settings.json").write_text(recorded)
    out = run("train", "--data", "x.jsonl", "--output", str(run_dir), "--resume")
    assert out.returncode == 2 and "words_per_line: 8 in the run, 0 now" in out.stderr
    assert (run_dir / "run_settings.json").read_text() == recorded


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_batched_scoring_equals_one_full_pass_per_label(causal_lm_dir, attention):
    """Left-padded batches of queries of different lengths, every label a branch of the same pass (1- to
    4-token labels, so branches of different lengths sit side by side), under both attention
    implementations that take the tree mask, give the plain scores."""
    from lqae_tokenizer.evaluation import load_causal_lm, score_labels_reference, score_queries_batched

    model, tok = load_causal_lm(str(causal_lm_dir))
    model.set_attn_implementation(attention)
    queries = ["input: dye output:", "input: florence dye a b c d e f g output:", "input: x y output:"]
    labels = ["T-shirt", "bag", "ankle boot", "pullover"]
    got = score_queries_batched(model, tok, queries, labels, batch_size=2)
    for query, row in zip(queries, got):
        torch.testing.assert_close(torch.tensor(row), torch.tensor(score_labels_reference(model, tok, query, labels)),
                                   rtol=1e-4, atol=1e-4)


def test_label_tree_mask_keeps_branches_apart():
    """Each label branch sees the query (causally) and its own earlier tokens, never another branch or the
    padding; a padding position sees only itself."""
    from lqae_tokenizer.llm.scoring import label_tree_mask, label_tree_rows

    tokens, positions, branches, targets = label_tree_rows([[5, 6, 7]], [[[10], [11, 12, 13], [14, 15]]])
    assert tokens[0] == [5, 6, 7, 11, 12, 14] and positions[0] == [0, 1, 2, 3, 4, 3]
    assert targets[0] == [[2], [2, 3, 4], [2, 5]]
    mask = label_tree_mask(branches[0], 8, "cpu")  # two padding columns on the left
    want = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0],
                         [0, 1, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 0, 0, 0, 0, 0],
                         [0, 0, 1, 1, 0, 0, 0, 0],
                         [0, 0, 1, 1, 1, 0, 0, 0],
                         [0, 0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 1, 1, 1, 1, 1, 0],
                         [0, 0, 1, 1, 1, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, want)


def test_batched_scoring_without_a_tree_mask_scores_per_query(causal_lm_dir, monkeypatch):
    """An attention implementation that takes no custom mask (flash attention) scores query by query."""
    from lqae_tokenizer.evaluation import load_causal_lm, score_queries_batched
    from lqae_tokenizer.llm import scoring

    model, tok = load_causal_lm(str(causal_lm_dir))
    queries, labels = ["input: dye output:", "input: a b c output:"], ["T-shirt", "bag"]
    tree = score_queries_batched(model, tok, queries, labels)
    monkeypatch.setattr(scoring, "_TREE_MASK_ATTENTION", ())
    per_query = score_queries_batched(model, tok, queries, labels)
    assert per_query == scoring.score_queries(model, tok, "", queries, labels)
    torch.testing.assert_close(torch.tensor(per_query), torch.tensor(tree), rtol=1e-4, atol=1e-4)
