"""The VQ-VAE baseline mode (quantizer="learned"): losses, exact search, no LM in the path, save/load,
no text form, and training it with lqae-train."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lqae_tokenizer import ImageTokenizer, LQAEConfig

from conftest import build_tokenizer, random_image
from train_helpers import final_weights, metrics, run_train, train_args

LEARNED = dict(quantizer="learned", learned_codebook_size=64, metric="l2", mask_ratio=0.0, commitment_weight=0.25)


@pytest.fixture(scope="module")
def vq_tokenizer(roberta_lm_dir):
    return build_tokenizer(roberta_lm_dir, **LEARNED)


def count_lm_calls(model) -> list[int]:
    calls = [0]
    model.language_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_forward_loss_terms_and_gradients_reach_the_codebook(roberta_lm_dir):
    tok = build_tokenizer(roberta_lm_dir, **LEARNED)
    model = tok.model
    calls = count_lm_calls(model)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.train()
    out = model(pixels)
    out.loss.backward()
    c = model.config
    expected = out.pixel_loss + c.codebook_loss_weight * out.codebook_loss + c.commitment_weight * out.commitment_loss
    assert c.codebook_loss_weight == 2.0  # the official VQAE weight (two identical quantizer paths)
    assert torch.allclose(out.loss, expected)
    assert out.codebook_loss > 0 and torch.allclose(out.codebook_loss, out.commitment_loss)  # same value, other side
    assert float(out.mlm_loss) == 0.0
    assert calls[0] == 0, "the VQ-VAE baseline must not run the language model"
    assert model.codebook.weight.grad is not None and model.codebook.weight.grad.abs().sum() > 0
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert set(model.trainable_modules()) == {"encoder", "decoder", "codebook"}
    assert all(p.grad is None for p in model.language_model.parameters())


def test_encode_is_the_exact_nearest_learned_row_and_decode_skips_the_lm(vq_tokenizer):
    model = vq_tokenizer.model
    calls = count_lm_calls(model)
    images = [random_image(s) for s in range(3)]
    ids = vq_tokenizer(images, return_tensors="pt")["input_ids"]
    assert ids.shape == (3, 16) and int(ids.min()) >= 0 and int(ids.max()) < 64
    from lqae_tokenizer.preprocessing import prepare_batch

    with torch.no_grad():
        z = model.encoder(prepare_batch(images, 32)).double()  # [3, 16, H]
        table = model.codebook.weight.double()
        oracle = torch.cdist(z.reshape(-1, z.shape[-1]), table).argmin(1).view(3, 16)
    assert torch.equal(ids, oracle)
    pictures = vq_tokenizer.batch_decode(ids, output_type="pt")
    assert pictures.shape == (3, 3, 32, 32) and 0 <= float(pictures.min()) and float(pictures.max()) <= 1
    with torch.no_grad():
        direct = model.decoder(F.embedding(ids, model.codebook.weight)).clamp(0, 1)
    torch.testing.assert_close(pictures, direct)
    feats = vq_tokenizer.features(images)
    assert feats.shape == (3, model.codebook.weight.shape[1])
    torch.testing.assert_close(feats, F.embedding(ids, model.codebook.weight).mean(1).detach())
    assert calls[0] == 0
    assert vq_tokenizer.vocab_size == 64 and torch.equal(vq_tokenizer.codebook_ids, torch.arange(64))


def test_ids_have_no_text_form_and_bad_ids_are_refused(vq_tokenizer):
    image = random_image(0)
    ids = vq_tokenizer.encode(image)
    for call in (lambda: vq_tokenizer.to_text(image), lambda: vq_tokenizer.ids_to_text(ids),
                 lambda: vq_tokenizer.from_text("hello"), lambda: vq_tokenizer.to_tokens(image),
                 lambda: vq_tokenizer.from_tokens(["hello"] * 16)):
        with pytest.raises(ValueError, match="quantizer='learned'"):
            call()
    with pytest.raises(ValueError, match="not codebook ids"):
        vq_tokenizer.decode([64] * 16)
    with pytest.raises(ValueError, match="layers= needs a language model"):
        vq_tokenizer.features(image, layers=[-1])


def test_save_and_load_round_trip(vq_tokenizer, tmp_path):
    vq_tokenizer.save_pretrained(tmp_path / "vq")
    loaded = ImageTokenizer.from_pretrained(tmp_path / "vq", device="cpu")
    assert loaded.config.quantizer == "learned" and loaded.config.learned_codebook_size == 64
    torch.testing.assert_close(loaded.model.codebook.weight, vq_tokenizer.model.codebook.weight, rtol=0, atol=0)
    images = [random_image(s) for s in range(4)]
    assert loaded.encode(images) == vq_tokenizer.encode(images)
    ids = vq_tokenizer.encode(images[0])
    assert torch.equal(loaded.decode(ids, output_type="pt"), vq_tokenizer.decode(ids, output_type="pt"))


@pytest.mark.parametrize("overrides, message", [
    (dict(quantizer="vq"), "quantizer must be one of"),
    (dict(quantizer="learned", mask_ratio=0.5), "set mask_ratio=0"),
    (dict(quantizer="learned", mask_ratio=0.0, learned_codebook_size=1), "learned_codebook_size"),
])
def test_invalid_learned_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        LQAEConfig.from_preset("tiny", **overrides)


@pytest.mark.slow
def test_lqae_train_trains_the_vqvae_baseline(roberta_lm_dir, tmp_path):
    out = tmp_path / "run"
    settings = tmp_path / "vqvae.json"  # settings without a flag of their own go in --config
    settings.write_text(json.dumps({"model": {"learned_codebook_size": 128, "commitment_weight": 0.25}}))
    result = run_train(train_args(roberta_lm_dir, out, "--config", str(settings), "--quantizer", "learned",
                                  "--mask_ratio", "0", "--max_train_steps", "80"))
    assert result.returncode == 0, result.stderr[-2000:]
    log = [r for r in metrics(out) if "pixel_loss" in r]
    first = sum(r["pixel_loss"] for r in log[:5]) / 5
    last = sum(r["pixel_loss"] for r in log[-10:]) / 10
    assert last < 0.75 * first, (first, last)
    assert all(r["mlm_loss"] == 0.0 and r["codebook_loss"] > 0 for r in log)
    weights = final_weights(out)
    assert weights["codebook.weight"].shape == (128, 32)
    tok = ImageTokenizer.from_pretrained(out / "final", device="cpu")
    init = build_tokenizer(roberta_lm_dir, **{**LEARNED, "learned_codebook_size": 128})
    assert not torch.equal(tok.model.codebook.weight, init.model.codebook.weight)  # the codebook was trained
    assert max(tok.encode(random_image(1))) < 128


def test_lqae_train_names_the_mask_ratio_fix(roberta_lm_dir, tmp_path):
    result = run_train(train_args(roberta_lm_dir, tmp_path / "run", "--quantizer", "learned", "--max_train_steps", "2"))
    assert result.returncode != 0
    assert "set mask_ratio=0" in result.stderr and "Traceback" not in result.stderr


def test_cli_gives_ids_only_for_a_learned_codebook(vq_tokenizer, tmp_path, capsys):
    from PIL import Image

    from lqae_tokenizer.cli.tokenize import main

    vq_tokenizer.save_pretrained(tmp_path / "vq")
    image = tmp_path / "x.png"
    Image.fromarray(random_image(0)).save(image)
    assert main([str(image), "--model", str(tmp_path / "vq")]) == 2
    err = capsys.readouterr().err
    assert "learned" in err and "use --format ids" in err
    assert main([str(image), "--model", str(tmp_path / "vq"), "--format", "ids"]) == 0
    assert [int(i) for i in capsys.readouterr().out.split()] == vq_tokenizer.encode(image)
    out = tmp_path / "ids.jsonl"
    assert main([str(image), "--model", str(tmp_path / "vq"), "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["ids"] == vq_tokenizer.encode(image) and "text" not in record
