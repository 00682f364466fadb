"""The "exact" promise under attack: near-ties inside the rounding margin, extreme and mixed
magnitudes, every global precision setting, wide vectors. The oracle here is written from scratch
in float64 (not the library's own ``exact_distances``), and each family of inputs is checked to be
hard: a plain low-precision argmax gets some of its rows wrong, so these tests can fail.
"""

from __future__ import annotations

import math

import pytest
import torch

from lqae_tokenizer import nearest_code
from lqae_tokenizer.kernels import bounds, reference
from lqae_tokenizer.kernels.naive import nearest_code_naive

METRICS = ["cosine", "l2", "dot"]
FILTERS = [torch.float32] + ([torch.bfloat16] if bounds.cpu_bf16_matmul_is_exact_enough() else [])


def independent_oracle(x: torch.Tensor, book: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 argmin written without the library's search code (kernels/naive.py)."""
    return nearest_code_naive(x, book, metric)


def _distance64(x: torch.Tensor, rows: torch.Tensor, metric: str) -> torch.Tensor:
    x64, r64 = x.double(), rows.double()
    if metric == "l2":
        return ((x64 - r64) ** 2).sum(-1)
    if metric == "cosine":
        x64 = x64 / x64.norm(dim=-1, keepdim=True)
        r64 = r64 / r64.norm(dim=-1, keepdim=True)
    return -(x64 * r64).sum(-1)


def near_tie_problem(n: int, v: int, d: int, metric: str, seed: int, gaps=(1e-9, 1e-3), query_scale=1.0):
    """Queries each with two codes (ids in random order) whose float64 distances differ by a
    relative gap drawn log-uniformly from ``gaps``: from far inside fp32's rounding (1e-9) to far
    inside bf16's (1e-3), always far outside float64's. The two codes point in unrelated directions,
    so their rounding errors are independent. ``query_scale`` < 1 makes l2 queries short next to
    the codes, so the ``|c|^2`` term dominates the scores."""
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(v, d, generator=g, dtype=torch.float64)
    x = torch.empty(n, d, dtype=torch.float64)
    low, high = math.log(gaps[0]), math.log(gaps[1])
    for i in range(n):
        a, b = torch.randperm(v, generator=g)[:2].tolist()
        q = (book[a] + 0.05 * torch.randn(d, generator=g, dtype=torch.float64)) * query_scale
        x[i] = q
        gap = math.exp(low + (high - low) * torch.rand(1, generator=g).item())
        sign = 1.0 if torch.rand(1, generator=g).item() < 0.5 else -1.0  # which of a, b wins
        other = torch.randn(d, generator=g, dtype=torch.float64)
        if metric == "l2":
            target = float(((q - book[a]) ** 2).sum()) + sign * gap * float(book[a].norm() ** 2)
            book[b] = q + other / other.norm() * math.sqrt(target)
        elif metric == "dot":
            target = float(q @ book[a]) - sign * gap * float(q.norm() * book[a].norm())
            start = book[a].norm() * other / other.norm()
            book[b] = start + (target - float(q @ start)) / float(q @ q) * q
        else:
            unit = q / q.norm()
            cos_a = float(unit @ book[a] / book[a].norm())
            cos_t = cos_a - sign * gap
            ortho = other - (other @ unit) * unit
            book[b] = book[a].norm() * (cos_t * unit + math.sqrt(1 - cos_t**2) * ortho / ortho.norm())
    return x.float(), book.float()


SETTINGS = {
    "default": lambda: None,
    "legacy-medium": lambda: torch.set_float32_matmul_precision("medium"),
    "legacy-high": lambda: torch.set_float32_matmul_precision("high"),
    "mkldnn-bf16": lambda: setattr(torch.backends.mkldnn.matmul, "fp32_precision", "bf16"),
    "mkldnn-tf32": lambda: setattr(torch.backends.mkldnn.matmul, "fp32_precision", "tf32"),
    "cuda-tf32": lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
    "generic-tf32": lambda: setattr(torch.backends, "fp32_precision", "tf32"),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("metric", METRICS)
def test_every_precision_setting_gives_the_float64_argmin(setting, metric, restore_precision_settings):
    x, book = near_tie_problem(120, 400, 96, metric, seed=11)
    want = independent_oracle(x, book, metric)
    SETTINGS[setting]()
    before = {path: bounds._setting(path) for path in ("cuda.matmul", "mkldnn.matmul")}
    for filter_dtype in FILTERS:
        prepared = reference.prepare_codebook(book, metric, filter_dtype)
        assert torch.equal(reference.nearest_code_torch(x, prepared), want), (setting, filter_dtype)
    assert torch.equal(nearest_code(x, book, metric=metric), want)
    # The search reads the settings; it never changes them (nor raises on the mixed legacy/new API).
    assert {path: bounds._setting(path) for path in ("cuda.matmul", "mkldnn.matmul")} == before
    bounds.fp32_matmul_arithmetic(torch.device("cuda"))  # the legacy getters would raise here


def test_reduced_settings_are_recognised_on_every_backend(restore_precision_settings):
    assert bounds.fp32_matmul_is_ieee(torch.device("cpu"))
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    assert not bounds.fp32_matmul_is_ieee(torch.device("cuda"))
    assert bounds.fp32_matmul_is_ieee(torch.device("cpu"))
    torch.set_float32_matmul_precision("medium")
    assert not bounds.fp32_matmul_is_ieee(torch.device("cpu"))
    assert bounds.fp32_matmul_arithmetic(torch.device("cpu")) is bounds.FP32_REDUCED


@pytest.mark.parametrize("d", [64, 768, 1536, 4096])
@pytest.mark.parametrize("metric", METRICS)
def test_near_ties_inside_the_margin_at_every_width(d, metric):
    x, book = near_tie_problem(48, 160, d, metric, seed=d)
    want = independent_oracle(x, book, metric)
    for filter_dtype in FILTERS:
        prepared = reference.prepare_codebook(book, metric, filter_dtype)
        assert torch.equal(reference.nearest_code_torch(x, prepared), want), filter_dtype
        # The problem is hard: the filter's own scores alone pick a wrong code on some rows ...
        exact_q = reference.query_layout(x, metric, prepared.exponent)
        naive = (exact_q.to(filter_dtype) @ prepared.filter_rows.t()).float().argmax(1)
        wrong = (naive != want).sum()
        assert wrong > 0, f"inputs too easy: a {filter_dtype} argmax already gets every row right"


def test_bf16_and_fp16_inputs_near_ties():
    for dtype in (torch.bfloat16, torch.float16):
        for metric in METRICS:
            x, book = near_tie_problem(64, 200, 128, metric, seed=5)
            x, book = x.to(dtype), book.to(dtype)
            assert torch.equal(nearest_code(x, book, metric=metric), independent_oracle(x, book, metric))


@pytest.mark.parametrize("metric", METRICS)
def test_mixed_magnitudes_in_one_table(metric):
    g = torch.Generator().manual_seed(7)
    book = torch.randn(300, 32, generator=g)
    book = book * torch.pow(10.0, torch.randint(-30, 31, (300, 1), generator=g).float())
    book[150] = book[3]  # an exact tie among them
    x = book[torch.randint(0, 300, (80,), generator=g)] * (1 + 1e-3 * torch.randn(80, 32, generator=g))
    x[0] = book[150]
    want = independent_oracle(x, book, metric)
    for filter_dtype in FILTERS:
        prepared = reference.prepare_codebook(book, metric, filter_dtype)
        assert torch.equal(reference.nearest_code_torch(x, prepared), want), filter_dtype
    assert nearest_code(x[:1], book, metric=metric).item() == want[0].item()


def test_finite_inputs_whose_fp32_scores_overflow():
    """|c|^2 above fp32's range, dot products and 2 x.c that overflow: the exact path settles them."""
    g = torch.Generator().manual_seed(8)
    book = torch.randn(64, 16, generator=g)
    book[10] *= 1e19  # |c|^2 ~ 1e39 > fp32 max
    book[11] = book[10] * 1.0001
    x = torch.cat([book[10:11] * 1.00005, torch.randn(4, 16, generator=g) * 3e19, book[:3] * 1e-20])
    for metric in METRICS:
        want = independent_oracle(x, book, metric)
        for filter_dtype in FILTERS:
            prepared = reference.prepare_codebook(book, metric, filter_dtype)
            assert torch.equal(reference.nearest_code_torch(x, prepared), want), (metric, filter_dtype)
    big = torch.full((2, 8), 3e38)  # fp32 max-sized queries against an ordinary table
    book = torch.randn(20, 8, generator=g)
    for metric in METRICS:
        assert torch.equal(nearest_code(big, book, metric=metric), independent_oracle(big, book, metric))


@pytest.mark.parametrize("metric", METRICS)
def test_tiny_and_subnormal_magnitudes(metric):
    g = torch.Generator().manual_seed(9)
    book = torch.randn(100, 24, generator=g)
    x = book[torch.randint(0, 100, (30,), generator=g)] + 1e-3 * torch.randn(30, 24, generator=g)
    for scale in (1e-25, 1e-38, 1e-42):
        xs = x * scale
        b = book * scale if metric == "l2" else book
        assert torch.equal(nearest_code(xs, b, metric=metric), independent_oracle(xs, b, metric)), scale
    row = torch.tensor([[1e-30, 0.0]])  # cosine of a vector whose square underflows
    table = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]]) * 1e-30
    assert nearest_code(row, table, metric=metric).tolist() == independent_oracle(row, table, metric).tolist()


def test_zero_queries_and_zero_rows():
    book = torch.randn(50, 8)
    book[7] = 0.0
    x = torch.zeros(3, 8)
    for metric in METRICS:
        assert torch.equal(nearest_code(x, book, metric=metric), independent_oracle(x, book, metric))
    x = -book[:5].clone()  # every cosine negative: the zero row (distance 0) wins
    assert nearest_code(x, book, metric="cosine").tolist() == independent_oracle(x, book, "cosine").tolist()


def test_tf32_truncation_stays_within_the_kernel_bound():
    """Emulate TF32 (inputs truncated to 10 explicit bits, products and sums in float64) on inputs
    whose truncation error is the largest possible, and check the kernel's bound covers it."""
    from lqae_tokenizer.kernels.kernel_layout import kernel_arithmetic

    def truncate_tf32(t: torch.Tensor) -> torch.Tensor:
        bits = t.float().view(torch.int32)
        return (bits & ~((1 << 13) - 1)).view(torch.float32).double()

    d = 768
    worst = 1.0 + (2.0**-10 - 2.0**-23)  # just below the next TF32 value: truncation loses ~2^-10
    x = torch.full((4, d), worst)
    c = torch.full((3, d), worst)
    exact = x.double() @ c.double().t()
    emulated = truncate_tf32(x) @ truncate_tf32(c).t()
    error = (emulated - exact).abs().max()
    arithmetic = kernel_arithmetic(torch.float32, "tf32", "dot")
    bound = bounds.score_error_bound(arithmetic, d, x.double().norm(dim=1), torch.zeros(4),
                                     float(c.double().norm(dim=1).max()), 0.0, exact.max(1).values)
    assert float(error) <= float(bound.min())
    # The old budget of 2^-10 for both factors together would not have covered it.
    assert float(error) > 2.0**-10 * float(x.double().norm(dim=1)[0] * c.double().norm(dim=1)[0])


def test_codebook_preparation_has_no_float64_copy_of_the_table():
    # A chunked preparation: its peak float64 buffer is PREPARE_ROWS rows, not the table.
    assert reference.PREPARE_ROWS * 768 * 8 < 50265 * 768 * 8 / 10
    book = torch.randn(reference.PREPARE_ROWS * 2 + 5, 8)
    prepared = reference.prepare_codebook(book, "l2", torch.float32)
    assert prepared.filter_rows.shape == (book.shape[0], 9) and prepared.filter_rows.dtype == torch.float32
    assert math.isfinite(prepared.row_error) and prepared.row_error < 1e-5 * prepared.row_norm


@pytest.mark.parametrize("metric", METRICS)
def test_reduced_precision_bound_covers_a_bf16_rounding_fp32_matmul(metric):
    """On CPUs with AMX, "medium"/oneDNN-bf16 settings make an fp32 matmul round its inputs to
    bf16. Emulate exactly that (inputs rounded to bf16, products summed in float64) and check that
    the bound the search uses under those settings keeps every float64 winner among its candidates,
    while the full-fp32 bound (what the search assumed before) loses some."""
    x, book = near_tie_problem(150, 200, 96, metric, seed=21)
    want = independent_oracle(x, book, metric)
    prepared = reference.prepare_codebook(book, metric, torch.float32)
    exact_q = reference.query_layout(x, metric, prepared.exponent)
    fed = exact_q.float()
    scores = (fed.bfloat16().double() @ prepared.filter_rows.bfloat16().double().t()).float()
    best = scores.max(1).values

    def winners_kept(arithmetic) -> torch.Tensor:
        margin = reference.score_margin(arithmetic, fed.shape[1], fed, exact_q, prepared.row_norm, prepared.row_error,
                                   best, metric)
        return scores.gather(1, want[:, None]).squeeze(1).double() >= best.double() - margin

    assert bool(winners_kept(bounds.FP32_REDUCED).all())
    assert not bool(winners_kept(bounds.FP32_IEEE).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("filter_dtype", [torch.bfloat16, torch.float32])
def test_the_fp32_cosine_layout_bounds_its_error_against_the_float64_reference(dtype, filter_dtype):
    """prepare_cosine_fp32 never computes the exact unit rows; its row_error and row_norm must still
    bound the true ones (measured here in float64), on rows of every ordinary magnitude, and its
    filter rows must be the float64 reference's up to that error."""
    g = torch.Generator().manual_seed(7)
    low, high = (-6, 10) if dtype == torch.float16 else (-28, 48)  # float16 holds only 2^-14 .. 65504
    scales = 2.0 ** torch.randint(low, high, (600, 1), generator=g).double()
    rows = (torch.randn(600, 96, generator=g, dtype=torch.float64) * scales)
    rows[:50, :40] = 0  # sparse rows
    rows[50:60] = rows[60:70] * (1 + 2.0**-20)  # near-duplicate directions
    rows = rows.to(dtype)
    fast = reference.prepare_cosine_fp32(rows, filter_dtype)
    slow = reference.prepare_codebook_float64(rows, "cosine", filter_dtype)
    assert fast is not None
    exact = reference.row_layout(rows, "cosine", 0)  # float64 unit rows
    used = fast.filter_rows.double()
    assert float(torch.linalg.vector_norm(used - exact, dim=1).max()) <= fast.row_error
    assert float(torch.linalg.vector_norm(used, dim=1).max()) <= fast.row_norm
    assert fast.row_error <= 4 * slow.row_error + 1e-3  # a bound, but not a loose one
    assert (fast.filter_rows.double() - slow.filter_rows.double()).abs().max() <= 2 * fast.row_error


def test_rows_the_fp32_cosine_layout_cannot_bound_take_the_float64_path_and_stay_exact():
    g = torch.Generator().manual_seed(3)
    for special in ("zero", "huge", "tiny"):
        book = torch.randn(300, 48, generator=g)
        book[5] = {"zero": 0.0, "huge": 2.0**60, "tiny": 2.0**-40}[special]
        assert reference.prepare_cosine_fp32(book, torch.bfloat16) is None
        x = torch.cat([book[:20] + 1e-3 * torch.randn(20, 48, generator=g), torch.randn(30, 48, generator=g)])
        assert torch.equal(nearest_code(x, book, metric="cosine", backend="torch"),
                           nearest_code_naive(x, book, "cosine"))
    with pytest.raises(ValueError, match="NaN or infinity"):
        nearest_code(torch.randn(2, 48), torch.full((4, 48), float("inf")), metric="cosine")


@pytest.mark.parametrize("metric", METRICS)
def test_near_ties_across_code_chunks_keep_the_float64_argmin(metric):
    """The filter's first pass keeps only each code chunk's best score and recomputes the chunks that
    can hold the winner: near-ties and exact duplicates split across chunk boundaries (and a winner in
    the last, short chunk) must still give the float64 argmin, lowest id on exact ties."""
    x, book = near_tie_problem(90, 700, 64, metric, seed=21)
    book[650:700] = book[:50]  # exact duplicates in the last chunk: the lower id must win
    book[333] = book[5] * (1 + 2.0**-22)  # a near-duplicate in another chunk
    x[:10] = book[650:660] + 1e-7  # queries right at the duplicated rows
    want = independent_oracle(x, book, metric)
    for filter_dtype in FILTERS:
        prepared = reference.prepare_codebook(book, metric, filter_dtype)
        for budget in (4 * 64 * 100, 4 * 64 * 7, 2 * 64 * 1):  # codes per chunk: 100, 7, 1 (or 2)
            got = reference.nearest_code_torch(x, prepared, memory_budget=budget)
            assert torch.equal(got, want), (filter_dtype, budget)
