"""Evaluation tools on small real data, with properties and hand-computed values."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lqae_tokenizer.evaluation import (build_prompt, codebook_statistics, linear_probe, mse,
                                       nearest_class_mean_accuracy, psnr, sample_episodes, score_labels, ssim)

from conftest import copy_roberta_tokenizer
from train_helpers import FASHION


@pytest.fixture(scope="module")
def fashion():
    """The 320 Fashion-MNIST images as float pixels [320, 784] and labels [320]."""
    rows = list(csv.DictReader(open(FASHION / "labels.csv")))
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(FASHION / r["file"]), dtype=np.float32) / 255).flatten()
                          for r in rows])
    return pixels, torch.tensor([int(r["label"]) for r in rows])


@pytest.mark.slow
def test_linear_probe_on_real_pixels_and_on_noise(fashion):
    x, y = fashion
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    train, test = order[:240], order[240:]
    acc = linear_probe(x[train], y[train], x[test], y[test])
    assert acc > 0.65  # linear models reach ~80% on Fashion-MNIST; chance is 10%
    shuffled = y[torch.randperm(len(y), generator=g)]
    assert linear_probe(x[train], shuffled[train], x[test], shuffled[test]) < 0.35  # nothing to learn


def test_linear_probe_separable_blobs():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 16, generator=g) * 10
    y = torch.arange(4).repeat(50)
    x = centres[y] + torch.randn(200, 16, generator=g)
    assert linear_probe(x[:120], y[:120], x[120:], y[120:]) == 1.0
    with pytest.raises(ValueError, match="equal H"):
        linear_probe(x[:, :3], y, x, y)


def test_reconstruction_metrics_by_hand():
    target = torch.zeros(2, 3, 16, 16)
    recon = target.clone()
    recon[0] += 0.1  # mse 0.01 -> 20 dB
    assert mse(recon, target).tolist() == pytest.approx([0.01, 0.0])
    values = psnr(recon, target)
    assert values[0].item() == pytest.approx(20.0) and math.isinf(values[1].item())
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))
    noisy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(noisy, noisy).item() == pytest.approx(1.0)
    assert ssim(noisy, noisy.flip(-1)).item() < 0.5
    with pytest.raises(ValueError, match="same shape"):
        mse(a, torch.zeros(1, 1, 8, 8))


def test_codebook_statistics_by_hand():
    stats = codebook_statistics([torch.tensor([[1, 1], [2, 3]]), torch.tensor([[1, 1]])], codebook_size=10)
    p = torch.tensor([4, 1, 1], dtype=torch.float64) / 6
    assert stats["distinct_ids"] == 3 and stats["usage"] == pytest.approx(0.3)
    assert stats["perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_episodes_are_balanced_and_disjoint(fashion):
    _, labels = fashion
    episodes = sample_episodes(labels.tolist(), n_way=5, k_shot=5, n_query=3, episodes=50, seed=0)
    assert len(episodes) == 50
    for ep in episodes:
        assert len(set(ep.classes)) == 5
        assert not set(ep.support) & set(ep.query)
        assert sorted(ep.support_labels) == sorted(list(range(5)) * 5)
        assert sorted(ep.query_labels) == sorted(list(range(5)) * 3)
        for idx, local in zip(ep.support + ep.query, ep.support_labels + ep.query_labels):
            assert labels[idx] == ep.classes[local]
    assert episodes == sample_episodes(labels.tolist(), n_way=5, k_shot=5, n_query=3, episodes=50, seed=0)
    with pytest.raises(ValueError, match="needs 11 classes"):
        sample_episodes(labels.tolist(), n_way=11, k_shot=1, n_query=1, episodes=1)


def test_prompt_has_the_papers_form():
    prompt = build_prompt([" alpha beta", "gamma"], ["sneaker", "bag"], " delta epsilon")
    assert prompt == "input: alpha beta output: sneaker\ninput: gamma output: bag\ninput: delta epsilon output:"


def test_nearest_class_mean_on_clean_features(fashion):
    _, labels = fashion
    features = torch.nn.functional.one_hot(labels, 10).double() + 0.01 * torch.randn(len(labels), 10)
    episodes = sample_episodes(labels.tolist(), n_way=5, k_shot=1, n_query=5, episodes=20)
    acc, half_width = nearest_class_mean_accuracy(features, episodes)
    assert acc == 1.0 and half_width == 0.0
    acc, half_width = nearest_class_mean_accuracy(torch.randn(len(labels), 10), episodes)
    assert acc < 0.6 and half_width > 0


@pytest.mark.slow
def test_causal_lm_scorer_picks_a_planted_label(tmp_path):
    """Teach a tiny GPT-2 that 'output:' is followed by ' sneaker', then score candidates."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    copy_roberta_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50265, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = torch.tensor([tokenizer("input: cat dog output: sneaker", add_special_tokens=False)["input_ids"]] * 4)
    for _ in range(40):
        opt.zero_grad()
        model(batch, labels=batch).loss.backward()
        opt.step()
    model.save_pretrained(tmp_path)
    prompt = build_prompt(["cat dog"], ["sneaker"], "cat dog")
    scores = score_labels(str(tmp_path), None, prompt, ["bag", "sneaker", "trouser"])
    assert max(range(3), key=scores.__getitem__) == 1
    assert score_labels(model, tokenizer, prompt, ["sneaker"]) == pytest.approx([scores[1]], rel=1e-5)


def test_cached_batched_scores_equal_one_pass_per_label(tmp_path):
    """score_queries (shared prefix once, one pass per query, candidates batched on its cache) gives the
    scores of the plain one-pass-per-label reference, for multi-token labels of different lengths."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from lqae_tokenizer.evaluation import score_labels_reference, score_queries

    copy_roberta_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50265, n_embd=32, n_layer=2, n_head=2, n_positions=256)).eval()
    prefix = build_prompt(["cat dog bird", "fish tree"], ["ankle boot", "T-shirt/top"], "x").rsplit("\n", 1)[0] + "\n"
    queries = ["input: sun moon star output:", "input: rain output:", "input: stone river hill lake output:"]
    candidates = ["bag", "ankle boot", "T-shirt/top", "sneaker"]
    got = score_queries(model, tokenizer, prefix, queries, candidates)
    for query, row in zip(queries, got):
        want = score_labels_reference(model, tokenizer, prefix + query, candidates)
        assert row == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert len({round(v, 3) for v in got[0]}) == len(candidates)  # the labels really score differently
    # No shared prefix (the one-prompt API) gives the same numbers.
    assert score_labels(model, tokenizer, prefix + queries[1], candidates) == pytest.approx(got[1], rel=1e-4, abs=1e-4)


def test_causal_lm_loader_names_the_extra_and_fails_fast(tmp_path, monkeypatch):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer import gguf_cache
    from lqae_tokenizer.evaluation import load_causal_lm

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    real = gguf_cache.importlib.util.find_spec
    monkeypatch.setattr(gguf_cache.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ImportError, match=r"lqae-tokenizer\[llm\]"):
        load_causal_lm(str(gguf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="absent-llm"):
        load_causal_lm("lqae-tests/absent-llm")
    with pytest.raises(CheckpointError, match="not installed"):
        load_causal_lm("pkg:no_such_package_here/model.gguf")


def test_features_layer_option(all_tokenizer):
    from conftest import random_image

    images = [random_image(s) for s in range(3)]
    last = all_tokenizer.features(images)
    assert torch.allclose(all_tokenizer.features(images, layers=[-1]), last, atol=1e-6)
    mixed = all_tokenizer.features(images, layers=[0, -1])
    assert mixed.shape == last.shape and not torch.allclose(mixed, last)
    with pytest.raises(ValueError, match="out of range"):
        all_tokenizer.features(images, layers=[10])
