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
