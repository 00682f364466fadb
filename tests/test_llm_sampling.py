"""The drawing sampler (lqae_tokenizer.llm.sampling) against an inverse-CDF oracle written here, a count of
many draws, and transformers' generate as the reference of the whole loop."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("peft")

from lqae_tokenizer.llm.sampling import sample_constrained, sample_next  # noqa: E402

NEG = float("-inf")


def oracle(scores: list[float], u: float, temperature: float = 1.0, top_k: int = 0) -> int:
    """Plain Python: softmax over the allowed entries, then the first index whose running sum passes u."""
    values = [s / temperature for s in scores]
    if top_k:
        kth = sorted(values, reverse=True)[top_k - 1]
        values = [v if v >= kth else NEG for v in values]
    top = max(values)
    weights = [math.exp(v - top) if v != NEG else 0.0 for v in values]
    target, running = u * sum(weights), 0.0
    for i, w in enumerate(weights):
        running += w
        if w > 0 and running > target:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


def test_sample_next_matches_the_oracle_away_from_boundaries():
    rows = [[0.0, NEG, 1.0, 2.0, NEG], [NEG, NEG, NEG, 5.0, NEG], [3.0, 3.0, 3.0, 3.0, 3.0],
            [-1e30, 0.0, NEG, 0.5, 60.0], [1.0, 4.0, 4.0, 2.0, NEG]]
    for u in (0.013, 0.31, 0.5001, 0.77, 0.9999999):  # u = 0 picks tokens of p ~ 1e-52: a boundary, tested below
        for temperature, top_k in ((1.0, 0), (0.5, 0), (3.0, 0), (1.0, 2), (1.0, 1)):
            got = sample_next(torch.tensor(rows), torch.full((len(rows),), u, dtype=torch.float64),
                              temperature=temperature, top_k=top_k).tolist()
            assert got == [oracle(r, u, temperature, top_k) for r in rows], (u, temperature, top_k)


def test_sample_next_never_picks_a_forbidden_or_zero_probability_token():
    """u = 0 before a forbidden first entry, u just under 1 with forbidden last entries, and entries whose
    probability underflows to 0 in float32 (60 nats below the top): never picked."""
    scores = torch.tensor([[NEG, -200.0, 0.0, NEG], [0.0, 1.0, NEG, NEG], [-200.0, 0.0, -200.0, NEG]])
    for u in (0.0, 1e-300, 0.5, 1 - 2**-52):
        picked = sample_next(scores, torch.full((3,), u, dtype=torch.float64))
        assert picked[0] == 2 and picked[1] in (0, 1) and picked[2] == 1
    with pytest.raises(ValueError, match="allows no token"):
        sample_next(torch.full((1, 4), NEG), torch.zeros(1, dtype=torch.float64))


def test_sample_next_draws_the_softmax_frequencies():
    """40,000 draws of a 5-token distribution: every frequency within 5 standard errors of its probability."""
    scores = torch.tensor([[0.0, 1.0, NEG, 2.0, -1.0]]).expand(40_000, -1)
    generator = torch.Generator().manual_seed(0)
    picked = sample_next(scores, torch.rand(40_000, generator=generator, dtype=torch.float64))
    counts = torch.bincount(picked, minlength=5).double() / 40_000
    probs = torch.softmax(scores[0].double(), -1)
    assert counts[2] == 0
    assert torch.all((counts - probs).abs() <= 5 * (probs * (1 - probs) / 40_000).sqrt() + 1e-12)


@pytest.mark.parametrize("words_per_line", [0, 8])
def test_the_loop_gives_generates_constrained_greedy_sequence(causal_lm_dir, fashion_tokenizer, words_per_line):
    """At a vanishing temperature sampling is greedy: the loop (one prompt pass, the cache repeated, rows that
    end padded) must give what transformers' generate gives with the same constraint, row for row."""
    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm.constrained import CodebookWordsProcessor, WordTrie
    from lqae_tokenizer.llm.image_lm import codebook_words
    from lqae_tokenizer.llm.prompt import newline_id

    model, tok = load_causal_lm(str(causal_lm_dir))
    trie = WordTrie(tok, list(codebook_words(fashion_tokenizer))[:3000])
    eos, newline = tok.eos_token_id, newline_id(tok) if words_per_line else None
    prompts = [tok("draw: bag\n", add_special_tokens=False)["input_ids"], [0, 7, 9]]
    for prompt in prompts:
        made = lambda: [CodebookWordsProcessor(trie, 16, len(prompt), eos, words_per_line=words_per_line,  # noqa: E731
                                               newline_id=newline)]
        ours = sample_constrained(model, prompt, 3, made(), max_new_tokens=made()[0].max_new_tokens(),
                                  eos_token_id=eos, seed=0, temperature=1e-6)
        inputs = torch.tensor([prompt] * 3)
        theirs = model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                max_new_tokens=made()[0].max_new_tokens(), eos_token_id=eos, pad_token_id=eos,
                                logits_processor=made())[:, len(prompt):]
        assert torch.equal(ours[:, : theirs.shape[1]], theirs)
        assert torch.all(ours[:, theirs.shape[1]:] == eos)


def test_sampling_is_seeded_and_leaves_the_global_random_state_alone(causal_lm_dir):
    from lqae_tokenizer.evaluation import load_causal_lm

    model, tok = load_causal_lm(str(causal_lm_dir))
    allow = lambda ids, scores: scores.masked_fill(torch.arange(scores.shape[1]) >= 40, NEG)  # noqa: E731
    state = torch.random.get_rng_state()
    one = sample_constrained(model, [0, 5], 4, [allow], max_new_tokens=6, eos_token_id=2, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(one, sample_constrained(model, [0, 5], 4, [allow], max_new_tokens=6, eos_token_id=2, seed=1))
    assert not torch.equal(one, sample_constrained(model, [0, 5], 4, [allow], max_new_tokens=6, eos_token_id=2, seed=2))
    assert one.shape[0] == 4 and one.shape[1] <= 6 and int(one.max()) < 40
