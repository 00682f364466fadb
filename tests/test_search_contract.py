"""The exact-search contract at its edges (issue 30): one-shot calls after writes that bypass the
version counter, Codebook snapshots, compile of the one-shot op, fp32 that stays fp32 under a
caller's autocast, and inputs given as arrays, PIL images or tensors giving identical pixels.
Every id is checked against the naive float64 oracle (kernels/naive.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lqae_tokenizer import Codebook, nearest_code
from lqae_tokenizer.images import to_tensor
from lqae_tokenizer.kernels.naive import nearest_code_naive

METRICS = ["cosine", "l2", "dot"]


def problem(seed: int = 0, v: int = 400, d: int = 24, n: int = 256):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, d, generator=g), torch.randn(n, d, generator=g)


def ema_update(table: torch.Tensor, seed: int = 1) -> None:
    """A VQ-style EMA codebook update written as many training loops write it: through ``.data``,
    which does not move the tensor's version counter."""
    g = torch.Generator().manual_seed(seed)
    table.data.mul_(0.5).add_(torch.randn(table.shape, generator=g), alpha=0.5)


# -- 1. one-shot calls are right whatever was done to the tensor ------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("write", ["ema through .data", "numpy view", "nn.Embedding .data"])
def test_one_shot_call_after_a_write_that_bypasses_the_version_counter(metric, write):
    table, x = problem()
    embedding = torch.nn.Embedding.from_pretrained(table.clone(), freeze=False)
    target = embedding.weight if write == "nn.Embedding .data" else table
    before = nearest_code(x, target, metric=metric)
    assert torch.equal(before, nearest_code_naive(x, target, metric))
    version = target._version
    if write == "numpy view":
        target.detach().numpy()[:] = torch.randn(target.shape, generator=torch.Generator().manual_seed(2)).numpy()
    else:
        ema_update(target)
    assert target._version == version  # the write is invisible to the version counter
    after = nearest_code(x, target, metric=metric)
    want = nearest_code_naive(x, target, metric)
    assert not torch.equal(before, want)  # the table really changed what is nearest
    assert torch.equal(after, want)


def test_one_shot_call_with_allowed_ids_after_a_write():
    table, x = problem(3)
    allowed = torch.arange(50, 350)
    nearest_code(x, table, allowed_ids=allowed)
    ema_update(table)
    assert torch.equal(nearest_code(x, table, allowed_ids=allowed), nearest_code_naive(x, table, "cosine", allowed))


# -- 2. a Codebook is a snapshot ---------------------------------------------------------------------
def tied_then_edited(seed: int, n: int = 8):
    """Queries each with two codes a, b at nearly the same l2 distance (a nearer, both far inside any
    filter's rounding margin, so both are re-ranked), then an edit: a moves away and a third code c
    becomes the query itself. Old answer a, new answer c; a search that filters with the old rows
    and re-ranks with the new ones answers b, which is neither."""
    g = torch.Generator().manual_seed(seed)
    table, x = torch.randn(400, 24, generator=g), torch.randn(n, 24, generator=g)
    a, b, c = torch.arange(n) * 3, torch.arange(n) * 3 + 1, torch.arange(n) * 3 + 2 + 100
    unit = lambda: torch.nn.functional.normalize(torch.randn(n, 24, generator=g), dim=1)  # noqa: E731
    table[a] = x + 1e-3 * unit()
    table[b] = x + 1e-3 * 1.01 * unit()

    def edit(write) -> None:
        moved = table.clone()
        moved[a] += 5.0
        moved[c] = x
        write(moved)

    return table, x, (a, b, c), edit


@pytest.mark.parametrize("allowed", [None, torch.arange(0, 400)])
@pytest.mark.parametrize("write", ["in place", "through .data"])
def test_codebook_answers_for_the_table_it_was_built_from(allowed, write):
    table, x, (a, b, c), edit = tied_then_edited(4)
    book = Codebook(table, metric="l2", allowed_ids=allowed)
    assert torch.equal(book.search(x), a) and torch.equal(nearest_code_naive(x, table, "l2"), a)
    edit((lambda new: table.copy_(new)) if write == "in place" else (lambda new: table.data.copy_(new)))
    assert torch.equal(nearest_code_naive(x, table, "l2"), c)
    assert torch.equal(book.search(x), a)  # the snapshot's answer, not b (a mix of old and new rows)
    assert torch.equal(Codebook(table, metric="l2", allowed_ids=allowed).search(x), c)



@pytest.mark.parametrize("allowed", [None, torch.arange(30, 370)])
def test_codebook_moved_to_another_device_is_a_separate_snapshot(allowed):
    # "cpu:0" differs from the codebook's "cpu" as a device name, so .to() takes the move path that
    # a GPU would take: a new Codebook prepared from the snapshot's rows, the original untouched.
    table, x = problem(5)
    book = Codebook(table, metric="cosine", allowed_ids=allowed)
    moved = book.to("cpu:0")
    assert moved is not book and moved._book is not book._book and book.to("cpu") is book
    expected = nearest_code_naive(x, table, "cosine", allowed)
    assert torch.equal(moved.search(x), expected) and torch.equal(book.search(x), expected)
    assert moved.metric == "cosine" and moved.size == book.size and (moved.vocab_size, moved.dim) == (400, 24)


# -- 4. torch.compile over the one-shot call and over Codebook.search --------------------------------
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_one_shot_nearest_code_compiles_with_fullgraph(compile_backend):
    torch._dynamo.reset()
    table, x = problem(5, v=300, d=16, n=40)

    def quantize(z):
        ids = nearest_code(torch.tanh(z) * 2.0, table, metric="cosine")
        return ids, ids + 1

    compiled = torch.compile(quantize, fullgraph=True, backend=compile_backend)
    ids, plus = compiled(x)
    assert torch.equal(ids, nearest_code_naive(torch.tanh(x) * 2.0, table, "cosine")) and torch.equal(plus, ids + 1)
    ema_update(table)  # the compiled call reads the table's contents at each call
    assert torch.equal(compiled(x)[0], nearest_code_naive(torch.tanh(x) * 2.0, table, "cosine"))


def test_one_shot_call_under_inference_mode_and_its_registered_op():
    table, x = problem(6, v=120, d=8, n=9)
    with torch.inference_mode():
        ids = nearest_code(x, table, metric="dot")
    assert torch.equal(ids, nearest_code_naive(x, table, "dot"))
    torch.library.opcheck(torch.ops.lqae.nearest_code_once.default, (x, table, None, "l2", "torch"))
    torch.library.opcheck(torch.ops.lqae.nearest_code_once.default, (x, table, torch.arange(10, 90), "cosine", "torch"))


def test_zero_vectors_under_cosine_get_the_lowest_id():
    table, x = problem(7, v=50, d=8, n=4)
    x[1] = 0.0
    assert nearest_code(x, table)[1].item() == 0
    assert nearest_code(x, table, allowed_ids=torch.arange(20, 30))[1].item() == 20
    table[33] = 0.0  # a zero code is at distance 0 from everything: it beats codes at negative similarity
    assert torch.equal(nearest_code(x, table), nearest_code_naive(x, table, "cosine"))


# -- 3. precision="fp32" stays fp32 under a caller's autocast ----------------------------------------
@pytest.fixture(scope="module")
def photo(minilm_dir):
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import sample_images

    return ImageTokenizer.from_pretrained("photo", device="cpu", precision="fp32"), sample_images("photo")


def test_fp32_encode_and_decode_ignore_a_callers_bf16_autocast(photo):
    tok, samples = photo
    ids = tok.encode(samples)
    pixels = tok.batch_decode(ids, output_type="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tok.encode(samples) == ids
        torch.testing.assert_close(tok.batch_decode(ids, output_type="pt"), pixels, rtol=0, atol=0)
        features = tok.features(samples)
    torch.testing.assert_close(features, tok.features(samples), rtol=0, atol=0)


def test_bf16_precision_is_its_own_whatever_autocast_the_caller_entered(photo):
    tok, samples = photo
    tok.precision = "bf16"
    try:
        ids = tok.encode(samples[:2])
        with torch.autocast("cpu", dtype=torch.float16):
            assert tok.encode(samples[:2]) == ids
    finally:
        tok.precision = "fp32"


# -- 5. the same pixels as an array, a PIL image or a tensor ----------------------------------------
def test_uint16_tensors_are_accepted_like_uint16_arrays():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    from_array = to_tensor(array)
    from_tensor = to_tensor(torch.from_numpy(array.astype(np.int32)).to(torch.uint16).permute(2, 0, 1))
    assert torch.equal(from_array, from_tensor)
    assert float(from_tensor.max()) <= 1.0


def test_rgba_arrays_pil_images_and_tensors_give_bit_identical_pixels():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)
    from_array = to_tensor(rgba)
    from_pil = to_tensor(Image.fromarray(rgba, mode="RGBA"))
    from_tensor = to_tensor(torch.from_numpy(rgba).permute(2, 0, 1))
    from_float = to_tensor(rgba.astype(np.float64) / 255.0)
    assert torch.equal(from_array, from_pil) and torch.equal(from_array, from_tensor)
    assert torch.equal(from_float, to_tensor(torch.from_numpy(rgba.astype(np.float64) / 255.0).permute(2, 0, 1)))


def test_a_trained_codebook_updated_through_data_is_searched_as_it_is_now():
    """The tokenizer's quantizer keeps a prepared layout of a frozen table; a trainable one (the
    VQ-VAE baseline's learned codebook, here updated EMA-style through .data) is prepared each call."""
    from lqae_tokenizer.quantizer import LanguageQuantizer

    table, x = problem(8, v=300, d=16, n=64)
    codebook = torch.nn.Parameter(table.clone())
    quantizer = LanguageQuantizer(torch.arange(300), "l2")
    assert torch.equal(quantizer.search(x[None], codebook)[0], nearest_code_naive(x, codebook, "l2"))
    ema_update(codebook)
    assert torch.equal(quantizer.search(x[None], codebook)[0], nearest_code_naive(x, codebook, "l2"))


def test_flushed_subnormal_queries_read_as_zero_as_documented():
    table, x = problem(9, v=100, d=8, n=4)
    x = x * 1e-40  # subnormal in float32
    assert torch.equal(nearest_code(x, table), nearest_code_naive(x, table, "cosine"))
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")  # hardware: no FTZ/DAZ support
    try:
        assert nearest_code(x, table).tolist() == [0, 0, 0, 0]  # zero vectors under cosine: the lowest id
        assert torch.equal(nearest_code(x, table), nearest_code_naive(x, table, "cosine"))
    finally:
        torch.set_flush_denormal(False)
