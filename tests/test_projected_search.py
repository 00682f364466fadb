"""The search projection (``search_dim``) and the multi-layer decoder input (``decoder_layers``,
``decoder_skip``): exact ids against an independent float64 oracle, real word ids with real rows to the
LM, the straight-through gradient, text round trips, save/load, and the paper default left alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import build_tokenizer, random_image
from lqae_tokenizer import ImageTokenizer, LQAEConfig


@pytest.fixture(scope="module")
def projected(roberta_lm_dir):
    """Tiny tokenizer searching in an 8-dim projection, decoder on (embedding output, last layer) + skip."""
    return build_tokenizer(roberta_lm_dir, codebook_vocabulary="words", search_dim=8, metric="l2",
                           decoder_layers=(0, -1), decoder_skip=True)


def oracle_ids(queries: torch.Tensor, table: torch.Tensor, allowed: torch.Tensor, projection: torch.Tensor):
    """float64 brute force: argmin over allowed w of ||q - r_w||^2 (lowest id on ties), where the rows
    r_w = normalize(E_w) P are computed in float64 and stored in float32, as the config documents."""
    rows = table.double()[allowed]
    rows = rows / rows.norm(dim=-1, keepdim=True)
    projected = (rows @ projection.double()).float().double()  # [K, d]
    distance = torch.cdist(queries.double(), projected) ** 2  # [M, K]
    return allowed[distance.argmin(dim=1)]


def test_paper_preset_keeps_the_papers_search_and_decoder_input():
    config = LQAEConfig.from_preset("paper")
    assert (config.search_dim, config.decoder_layers, config.decoder_skip, config.metric) == (0, (-1,), False, "cosine")


@pytest.mark.parametrize("bad, match", [
    (dict(search_dim=8), "metric='l2'"),
    (dict(search_dim=-1), "search_dim must be an integer >= 0"),
    (dict(search_dim=8, metric="l2", codebook_entropy_weight=0.1), "set one of them to 0"),
    (dict(search_dim=8, metric="l2", quantizer="learned", mask_ratio=0.0), "search_dim=0 or quantizer='language'"),
    (dict(decoder_layers=()), "non-empty list of distinct integer"),
    (dict(decoder_layers=(0, 0)), "non-empty list of distinct integer"),
    (dict(decoder_layers=(0, "last")), "non-empty list of distinct integer"),
    (dict(decoder_skip="yes"), "decoder_skip must be true or false"),
    (dict(quantizer="learned", mask_ratio=0.0, decoder_layers=(0, -1)), "decoder_layers must be \\[-1\\]"),
])
def test_invalid_settings_say_what_to_change(bad, match):
    with pytest.raises(ValueError, match=match):
        LQAEConfig.from_preset("tiny", **bad)


def test_decoder_layers_out_of_range_names_the_count(roberta_lm_dir):
    with pytest.raises(ValueError, match="3 hidden states"):  # embedding output + 2 layers
        build_tokenizer(roberta_lm_dir, decoder_layers=(0, 5))


def test_search_matches_the_float64_oracle_on_near_ties(projected):
    model = projected.model
    table = model.language_model.word_embeddings.detach()
    allowed = model.quantizer.allowed_ids
    projection = model.quantizer.projection.detach()
    rows = F.normalize(table.double()[allowed], dim=-1) @ projection.double()  # [K, d]
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, len(allowed), (64,), generator=g)
    # Queries exactly between two rows' projections, nudged by 1e-6 towards the second: within any
    # rounding margin of a float32 distance, so only an exact search returns the second row.
    other = torch.randint(0, len(allowed), (64,), generator=g)
    mid = (rows[pick] + rows[other]) / 2
    near_ties = (mid + 1e-6 * (rows[other] - rows[pick])).float()
    on_rows = rows[pick].float()  # every query sitting exactly on a row
    far = torch.randn(64, 8, generator=g) * 1e4  # far from every row: distances ~1e8
    queries = torch.cat([near_ties, on_rows, far])
    got = model.quantizer.search(queries[None], table)[0]
    expected = oracle_ids(queries, table, allowed, projection)
    assert torch.equal(got, expected)
    assert set(got.tolist()) <= set(allowed.tolist())


def test_lm_reads_real_rows_and_gradient_reaches_encoder_and_projection(roberta_lm_dir):
    tokenizer = build_tokenizer(roberta_lm_dir, codebook_vocabulary="words", search_dim=8,
                                metric="l2", decoder_layers=(0, -1), decoder_skip=True)
    model = tokenizer.model.train()
    table = model.language_model.word_embeddings
    z = torch.randn(2, 16, 8, requires_grad=True)
    out = model.quantizer(z, table)
    assert torch.equal(out.quantized.detach(), table.detach()[out.ids])  # the LM gets the raw rows, exactly
    (out.quantized.sum() + out.codebook_loss).backward()
    assert z.grad is not None and bool(z.grad.abs().sum() > 0)
    assert model.quantizer.projection.grad is not None and bool(model.quantizer.projection.grad.abs().sum() > 0)
    # The straight-through map: d(LM input)/dz = |E_w| pinv(P), so grad z = |E_w| (1 ... 1) pinv(P)^T.
    back = torch.linalg.pinv(model.quantizer.projection.detach())
    norms = table.detach()[out.ids].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(z.grad, norms * back.sum(dim=1), rtol=1e-4, atol=1e-5)


def test_training_step_moves_encoder_projection_and_decoder(roberta_lm_dir):
    tokenizer = build_tokenizer(roberta_lm_dir, codebook_vocabulary="words", search_dim=8, metric="l2",
                                decoder_layers=(0, -1), decoder_skip=True, mask_ratio=0.0)
    model = tokenizer.model.train()
    pixels = torch.stack([torch.from_numpy(random_image(i)).permute(2, 0, 1).float() / 255 for i in range(4)])
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    out = model(pixels)
    assert out.reconstruction.shape == pixels.shape and bool(torch.isfinite(out.loss))
    out.loss.backward()
    optimizer.step()
    after = model.trainable_state_dict()
    for prefix in ("encoder.", "decoder.transformer", "decoder.skip", "quantizer.projection"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix


def test_decoder_reads_the_concatenated_layers(projected):
    model = projected.model
    ids = projected.encode(random_image(3), do_resize=False)
    ids = torch.tensor([ids])
    states = model.language_model.all_hidden_states(model.embed(ids))
    expected = model.decoder(torch.cat([states[0], states[-1]], dim=-1)).clamp(0, 1)
    torch.testing.assert_close(model.decode(ids), expected)
    assert model.decoder.skip.in_features == 2 * model.language_model.hidden_size


def test_text_round_trip_and_ids_are_words(projected):
    images = [random_image(i) for i in range(3)]
    ids = projected.encode(images)
    allowed = set(projected.codebook_ids.tolist())
    assert all(i in allowed for row in ids for i in row)
    for row, text in zip(ids, projected.to_text(images)):
        assert projected.from_text(text) == row


def test_save_and_load_keep_ids_and_pixels(projected, tmp_path):
    images = [random_image(i) for i in range(3)]
    projected.save_pretrained(tmp_path / "tok")
    loaded = ImageTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config.decoder_layers == (0, -1) and loaded.config.search_dim == 8
    assert loaded.encode(images) == projected.encode(images)
    ids = projected.encode(images)
    assert torch.equal(loaded.batch_decode(ids, output_type="pt"), projected.batch_decode(ids, output_type="pt"))
    # the projection is a saved weight: a file without it is refused, not silently re-randomised
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "tok" / "model.safetensors")
    assert "quantizer.projection" in weights
    del weights["quantizer.projection"]
    save_file(weights, tmp_path / "tok" / "model.safetensors")
    with pytest.raises(Exception, match="quantizer.projection"):
        ImageTokenizer.from_pretrained(tmp_path / "tok")


def test_projection_edit_invalidates_the_cached_search(roberta_lm_dir):
    tokenizer = build_tokenizer(roberta_lm_dir, codebook_vocabulary="words", search_dim=8, metric="l2")
    image = random_image(5)
    before = tokenizer.encode(image)
    with torch.no_grad():
        tokenizer.model.quantizer.projection.mul_(-1.0)  # in place: same storage, new version
    model = tokenizer.model
    z = model.encoder(torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255)
    expected = oracle_ids(z[0].detach(), model.language_model.word_embeddings.detach(), model.quantizer.allowed_ids,
                          model.quantizer.projection.detach())
    after = tokenizer.encode(image)
    assert after == expected.tolist() and after != before


@pytest.mark.parametrize("setting", ["bf16-autocast", "fp16-queries", "matmul-medium"])
def test_search_stays_exact_under_every_precision_setting(projected, setting, restore_precision_settings):
    model = projected.model
    table = model.language_model.word_embeddings.detach()
    allowed = model.quantizer.allowed_ids
    projection = model.quantizer.projection.detach()
    rows = F.normalize(table.double()[allowed], dim=-1) @ projection.double()
    g = torch.Generator().manual_seed(1)
    pick, other = (torch.randint(0, len(allowed), (128,), generator=g) for _ in range(2))
    queries = ((rows[pick] + rows[other]) / 2).float()  # near-ties once rounded to the query dtype
    dtype = {"bf16-autocast": torch.bfloat16, "fp16-queries": torch.float16}.get(setting, torch.float32)
    queries = queries.to(dtype)
    if setting == "matmul-medium":
        torch.set_float32_matmul_precision("medium")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting == "bf16-autocast"):
        got = model.quantizer.search(queries[None], table)[0]
    assert torch.equal(got, oracle_ids(queries.double(), table, allowed, projection))
