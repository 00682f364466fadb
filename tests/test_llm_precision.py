"""bf16 reading and drawing cast each Linear weight once per call (lqae_tokenizer.llm.precision): the same
numbers as autocast casting them at every pass, and the float32 model left exactly as it was."""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("peft")


def tied_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)).eval()


def test_weights_are_bf16_inside_and_the_same_float32_parameters_after():
    from lqae_tokenizer.llm.precision import bf16_linear_weights

    model = tied_llama()
    before = {name: p for name, p in model.named_parameters()}
    saved = {name: p.detach().clone() for name, p in before.items()}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with bf16_linear_weights(model) as cast:
        assert cast == 2 * 7 + 1  # q k v o gate up down per layer, and the LM head
        assert model.lm_head.weight.dtype == torch.bfloat16
        assert model.model.embed_tokens.weight.dtype == torch.float32  # the lookup keeps float32
        assert model.model.norm.weight.dtype == torch.float32
    assert dict(model.named_parameters()) == before  # the very same Parameter objects
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied again
    for name, p in model.named_parameters():
        assert torch.equal(p, saved[name])


def test_weights_come_back_after_an_error():
    from lqae_tokenizer.llm.precision import bf16_linear_weights

    model = tied_llama()
    before = dict(model.named_parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with bf16_linear_weights(model):
            raise RuntimeError("boom")
    assert dict(model.named_parameters()) == before
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cast_once_gives_the_logits_of_autocast_casting_every_pass():
    from lqae_tokenizer.llm.precision import read_precision

    model = tied_llama()
    ids = torch.randint(3, 300, (3, 17))
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = model(ids).logits
        with read_precision(model, "bf16"):
            got = model(ids).logits
        fp32 = model(ids).logits
    assert torch.equal(got, want)
    assert not torch.equal(got.float(), fp32)  # bf16 really ran


@pytest.fixture()
def autocast_every_pass(monkeypatch):
    """bf16 as it was before: autocast alone, casting the float32 weights at every pass."""
    from lqae_tokenizer.llm import precision

    monkeypatch.setattr(precision, "bf16_linear_weights", lambda model: contextlib.nullcontext(0))


def test_image_lm_bf16_scores_and_drawings_are_unchanged(causal_lm_dir, fashion_tokenizer, request):
    """An ImageLM with a merged LoRA adapter: bf16 scores and seeded drawings equal those of autocast alone."""
    from peft import LoraConfig, get_peft_model

    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm import ImageLM

    base, tok = load_causal_lm(str(causal_lm_dir))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.merge_adapter()
    lm = ImageLM(fashion_tokenizer, model, tok, ["T-shirt", "bag", "ankle boot"], precision="bf16")
    texts = ["dye florence " * 32, "a " * 64]
    scores, drawn = lm.scores_of_texts(texts), lm.draw_ids("bag", 2, seed=3)
    request.getfixturevalue("autocast_every_pass")
    torch.testing.assert_close(lm.scores_of_texts(texts), scores, rtol=0, atol=0)
    assert torch.equal(lm.draw_ids("bag", 2, seed=3), drawn)
    assert all(p.dtype == torch.float32 for p in model.parameters())
