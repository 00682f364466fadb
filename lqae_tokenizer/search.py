"""Exact nearest-codebook search: one public op, a prepared codebook, and backend dispatch.

``nearest_code(x, codebook)`` returns, for every row of ``x``, the id of the codebook row at the
smallest float64 distance (ties: lowest id), on every backend and batch size:

- ``"torch"``: the plain-PyTorch path of ``lqae_tokenizer.kernels.reference``: a bf16 (CPU) or
  fp32 filter matmul, then an exact float64 re-rank of every code within the proven rounding bound
  (``kernels/bounds.py``) of the best;
- ``"triton"``: the fused Triton kernel (``kernels/nearest_code_triton.py``) proposes the best id and
  the runner-up score per row; a row is accepted when the gap exceeds twice the proven rounding bound
  of the kernel's arithmetic (``kernels/kernel_layout.py``), and every other row goes to the torch path.

The bounds are computed from the global precision settings in force at each call (TF32, oneDNN bf16,
``set_float32_matmul_precision``), and autocast is switched off inside the op, so no setting of the
caller's can change an id; the caller's settings are never modified.

The op is registered with ``torch.library`` as ``lqae::nearest_code`` so that ``torch.compile``
treats it as one opaque call (no graph break).
"""

from __future__ import annotations

import copy
import functools
import logging
import os

import torch

from .kernels import kernel_layout, reference

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")
# How the Triton kernel multiplies float32 inputs (not a "precision" of the tokenizer's kind: inputs and
# outputs stay float32 and ids stay exact; only how many rows go to the exact re-rank changes).
FP32_MATMUL_MODES = ("tf32", "ieee")


def _validate_metric(metric: str) -> None:
    if metric not in reference.METRICS:
        raise ValueError(f"metric must be one of {reference.METRICS}, got {metric!r}")


@functools.lru_cache(maxsize=None)
def _triton_import_problem() -> str | None:
    try:
        from .kernels import nearest_code_triton  # noqa: F401  (imports triton)
    except ImportError as err:
        return f"triton is not importable ({err}); install it with `pip install triton` (Linux x86_64)"
    return None


def triton_problem(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on ``device`` (``None`` when it can)."""
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "tensors are on the CPU; the Triton kernel runs on CUDA (or on the CPU with TRITON_INTERPRET=1)"
    elif device.type != "cuda":
        return f"tensors are on {device}; the Triton kernel runs on CUDA devices"
    problem = _triton_import_problem()
    if problem is None and device.type == "cpu":
        from .kernels import nearest_code_triton

        if not nearest_code_triton.INTERPRETED:
            return "the kernel module was imported before TRITON_INTERPRET=1 was set; set it before importing"
    return problem


@functools.lru_cache(maxsize=None)
def _log_fallback_once(reason: str) -> None:
    logger.info("nearest_code: using the torch backend because %s", reason)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"torch"`` or ``"triton"`` for ``backend`` on ``device``.

    ``"auto"`` honours ``LQAE_BACKEND`` and picks Triton on CUDA when it can run, otherwise torch
    (logged once). An explicit ``"triton"`` that cannot run raises ``RuntimeError`` saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("LQAE_BACKEND", "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"LQAE_BACKEND must be one of {BACKENDS}, got {backend!r}; unset it or fix the value")
    if backend == "torch":
        return "torch"
    problem = triton_problem(device)
    if backend == "triton":
        if problem:
            raise RuntimeError(f"backend='triton' cannot run: {problem}")
        return "triton"
    if device.type == "cuda" and problem is None:
        return "triton"
    if device.type == "cuda":
        _log_fallback_once(problem)
    return "torch"


def _check_queries(x: torch.Tensor, dim: int, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [N, {dim}], got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape [N, {dim}] (the codebook's width), got {list(x.shape)}")
    if x.dtype not in reference.SUPPORTED_DTYPES:
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}; convert it with x.float()")
    if x.device != device:
        raise ValueError(f"x is on {x.device} but the codebook is on {device}; move one of them with .to()")


class Codebook:
    """A codebook prepared once for repeated exact nearest-row search.

    The codebook is a snapshot: it copies the rows it searches when built, so every later search
    answers for the table as it was then, whatever happens to the tensor that was passed (in-place
    edits, writes through ``.data`` or a NumPy view). After changing the table, build a new
    ``Codebook``. Building one costs a few float32 passes over the table for the cosine metric (a
    float64 layout for l2, dot, and rows of extreme magnitude): build it once, search many times.

    Args:
        embeddings: ``[V, D]`` float32/bfloat16/float16 rows (e.g. a frozen word-embedding table).
        metric: ``"cosine"`` (the paper's l2-normalised search), ``"l2"`` (squared Euclidean) or
            ``"dot"`` (largest inner product).
        allowed_ids: optional 1-D int64 ids in ``[0, V)``, unique; the search only returns these.

    Example:
        >>> book = Codebook(torch.randn(100, 8), metric="cosine", allowed_ids=torch.arange(10, 60))
        >>> ids = book.search(torch.randn(5, 8))  # LongTensor[5], values in [10, 60)
    """

    def __init__(self, embeddings: torch.Tensor, metric: str = "cosine",
                 allowed_ids: torch.Tensor | None = None, *, _one_call: bool = False) -> None:
        _validate_metric(metric)
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] == 0:
            got = list(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a non-empty [V, D] tensor, got {got}")
        if embeddings.dtype not in reference.SUPPORTED_DTYPES:
            raise TypeError(f"embeddings must be float32, bfloat16 or float16, got {embeddings.dtype}")
        self.metric = metric
        self.vocab_size, self.dim = embeddings.shape
        self.allowed_ids = self._check_allowed(allowed_ids, embeddings.device)
        # A snapshot: later writes to the caller's tensor (in place, through .data or a NumPy view)
        # cannot reach the rows the search re-ranks with, so filter and re-rank always agree. A codebook
        # built for one call (nearest_code) is searched before its caller can write anything: no copy.
        table = embeddings.detach()
        if self.allowed_ids is not None:
            rows = table[self.allowed_ids]
        else:
            rows = table if _one_call else table.clone()
        self._prepare(rows)  # ValueError for a row that is not finite

    def _prepare(self, rows: torch.Tensor) -> None:
        self._book = reference.prepare_codebook(rows, self.metric)
        self._kernel_layouts: dict[torch.dtype, kernel_layout.KernelLayout] = {}

    def _check_allowed(self, allowed_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        if allowed_ids is None:
            return None
        ids = torch.as_tensor(allowed_ids, device=device)
        if ids.dim() != 1 or ids.numel() == 0 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"allowed_ids must be a non-empty 1-D integer tensor, got {ids.dtype} {list(ids.shape)}")
        ids = ids.long()
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(f"allowed_ids must lie in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")
        # Sorted ids keep "lowest id wins" equal to "lowest position wins" in the restricted table.
        sorted_ids = torch.unique(ids)
        if sorted_ids.numel() != ids.numel():
            raise ValueError("allowed_ids contains duplicates; pass each id once")
        return sorted_ids

    @property
    def size(self) -> int:
        """Number of rows the search can return."""
        return self._book.rows.shape[0]

    @property
    def device(self) -> torch.device:
        return self._book.rows.device

    @property
    def dtype(self) -> torch.dtype:
        return self._book.rows.dtype

    def to(self, device: torch.device | str) -> "Codebook":
        """This codebook on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        # A shallow copy keeps metric and sizes; the rows are moved and prepared again on the new
        # device (the prepared layout and the kernel layouts belong to one device).
        moved = copy.copy(self)
        moved.allowed_ids = None if self.allowed_ids is None else self.allowed_ids.to(device)
        moved._prepare(self._book.rows.to(device))
        return moved

    def _kernel_layout(self, dtype: torch.dtype) -> kernel_layout.KernelLayout:
        """The Triton kernel's rows in its compute dtype (prepared on first use, cached)."""
        if dtype not in self._kernel_layouts:
            self._kernel_layouts[dtype] = kernel_layout.prepare_kernel_layout(self._book.rows, self.metric, dtype)
        return self._kernel_layouts[dtype]

    def search(self, x: torch.Tensor, *, backend: str = "auto", fp32_matmul: str = "tf32",
               memory_budget: int = reference.DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
        """Exact nearest ids for ``x`` ``[N, D]`` -> ``LongTensor[N]`` in ``[0, V)``.

        Args:
            x: float32/bfloat16/float16 queries on the codebook's device; any strides.
            backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :func:`resolve_backend`).
            fp32_matmul: how the Triton kernel multiplies fp32 inputs: ``"tf32"`` (tensor cores, more
                rows re-ranked) or ``"ieee"``. Ids are exact either way.
            memory_budget: bytes for the torch path's score tile.
        """
        _check_queries(x, self.dim, self.device)
        if fp32_matmul not in FP32_MATMUL_MODES:
            raise ValueError(f"fp32_matmul must be one of {FP32_MATMUL_MODES}, got {fp32_matmul!r}")
        chosen = resolve_backend(backend, x.device)
        layout = self._kernel_layout(torch.promote_types(x.dtype, self.dtype)) if chosen == "triton" else None
        positions = torch.ops.lqae.nearest_code(x.detach(), *op_inputs(self._book, layout), self.metric, chosen,
                                                fp32_matmul, memory_budget)
        return positions if self.allowed_ids is None else self.allowed_ids[positions]


def op_inputs(book: reference.PreparedCodebook, layout: kernel_layout.KernelLayout | None) -> tuple:
    """The prepared layouts as the registered op takes them (tensors and a list of numbers: custom ops
    accept no dataclasses); :func:`_layouts_from_op_inputs` is the inverse. ``layout`` None: torch path."""
    if layout is None:  # the kernel's slots are unused on the torch path
        kernel_rows, aux, knorm, kerror = book.filter_rows, book.filter_rows.new_empty(0, dtype=torch.float32), 0.0, 0.0
    else:
        kernel_rows, aux, knorm, kerror = layout.rows, layout.aux, layout.row_norm, layout.row_error
    numbers = [float(book.exponent), book.shift, book.row_norm, book.row_error, knorm, kerror]
    return book.rows, book.filter_rows, kernel_rows, aux, numbers


def _layouts_from_op_inputs(rows, filter_rows, kernel_rows, aux, numbers, metric):
    exponent, shift, row_norm, row_error, knorm, kerror = numbers
    book = reference.PreparedCodebook(rows, metric, int(exponent), shift, filter_rows, row_norm, row_error)
    return book, kernel_layout.KernelLayout(kernel_rows, aux, metric, int(exponent), shift, knorm, kerror)


@torch.library.custom_op("lqae::nearest_code", mutates_args=())
def _nearest_code_op(x: torch.Tensor, rows: torch.Tensor, filter_rows: torch.Tensor, kernel_rows: torch.Tensor,
                     aux: torch.Tensor, numbers: list[float], metric: str, backend: str, precision: str,
                     memory_budget: int) -> torch.Tensor:
    """Positions ``[N]`` into ``rows``; see :meth:`Codebook.search`. Inputs: :func:`op_inputs`."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinity; nearest-code search needs finite queries")
    book, layout = _layouts_from_op_inputs(rows, filter_rows, kernel_rows, aux, numbers, metric)
    # The error bounds assume the arithmetic asked for: an enclosing autocast (mixed-precision
    # training, bf16 inference) would silently turn the fp32/fp64 matmuls into bf16 ones.
    with torch.autocast(x.device.type, enabled=False):
        if backend == "triton":
            return _search_triton(x, book, layout, precision, memory_budget)
        return reference.nearest_code_torch(x, book, memory_budget=memory_budget)


@_nearest_code_op.register_fake
def _(x, rows, filter_rows, kernel_rows, aux, numbers, metric, backend, precision, memory_budget):
    return x.new_empty((x.shape[0],), dtype=torch.long)


def _search_triton(x: torch.Tensor, book: reference.PreparedCodebook, layout: kernel_layout.KernelLayout,
                   precision: str, memory_budget: int) -> torch.Tensor:
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    ids, ambiguous = _triton_proposals(x, layout, precision)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        ids[rows] = reference.nearest_code_torch(x[rows], book, memory_budget=memory_budget)
    return ids


def _triton_proposals(x: torch.Tensor, layout: kernel_layout.KernelLayout,
                      precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's best ids ``[N]`` int64 and which rows it cannot settle ``[N]`` bool."""
    from .kernels import nearest_code_triton as kernel

    fed, exact = kernel_layout.kernel_queries(x, layout)
    best, ids, second = kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, layout.metric, precision))
    margin = kernel_layout.kernel_margin(fed, exact, layout, best, precision)
    # Accept a row only when no other code can overtake the kernel's best within the rounding bound.
    ambiguous = ~torch.isfinite(best) | ~((best.double() - second.double()) > margin)
    return ids, ambiguous


def triton_fallback_share(book: Codebook, x: torch.Tensor, fp32_matmul: str = "tf32") -> float:
    """Share of the rows of ``x`` ``[N, D]`` that the Triton kernel leaves to the exact torch path.

    A diagnostic for benchmarks (the ids do not depend on it): the rows whose best and second-best
    kernel scores lie within the rounding margin. Needs a CUDA device (or ``TRITON_INTERPRET=1``).
    """
    _check_queries(x, book.dim, book.device)
    if x.shape[0] == 0:
        return 0.0
    layout = book._kernel_layout(torch.promote_types(x.dtype, book.dtype))
    with torch.autocast(x.device.type, enabled=False):
        _, ambiguous = _triton_proposals(x.detach(), layout, fp32_matmul)
    return float(ambiguous.float().mean())


@torch.library.custom_op("lqae::nearest_code_once", mutates_args=())
def _nearest_code_once_op(x: torch.Tensor, codebook: torch.Tensor, allowed_ids: torch.Tensor | None, metric: str,
                          backend: str) -> torch.Tensor:
    """One-shot search as one opaque op: prepare ``codebook`` now (no snapshot copy: nothing can write to
    it before the search returns), search, forget it."""
    return Codebook(codebook, metric=metric, allowed_ids=allowed_ids, _one_call=True).search(x, backend=backend)


@_nearest_code_once_op.register_fake
def _(x, codebook, allowed_ids, metric, backend):
    return x.new_empty((x.shape[0],), dtype=torch.long)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, metric: str = "cosine", backend: str = "auto",
                 allowed_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Exact nearest codebook row for each query.

    Args:
        x: ``[N, D]`` float32/bfloat16/float16 queries.
        codebook: ``[V, D]`` rows of a supported float dtype, on the same device as ``x``.
        metric: ``"cosine"`` | ``"l2"`` | ``"dot"``.
        backend: ``"auto"`` (env ``LQAE_BACKEND`` overrides) | ``"torch"`` | ``"triton"``.
        allowed_ids: optional subset of ids to search; returned ids are in the full ``[0, V)`` range.

    Returns:
        ``LongTensor[N]``: the argmin of the float64 distance, ties to the lowest id.

    Example:
        >>> nearest_code(torch.eye(3), torch.eye(3), metric="l2").tolist()
        [0, 1, 2]

    Each call prepares ``codebook`` from its current contents and keeps nothing, so the answer is
    right whatever was done to the tensor before (no cache that a write through ``.data`` could
    leave stale). Preparing costs several searches' worth of time: to search the same table
    repeatedly, build a :class:`Codebook` once. The call is one registered op
    (``torch.ops.lqae.nearest_code_once``), so ``torch.compile(..., fullgraph=True)`` compiles code
    that calls it without a graph break.
    """
    _validate_metric(metric)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, value, shape in (("x", x, "[N, D]"), ("codebook", codebook, "[V, D]")):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}")
    if allowed_ids is not None and not isinstance(allowed_ids, torch.Tensor):
        allowed_ids = torch.as_tensor(allowed_ids, device=codebook.device)
    return torch.ops.lqae.nearest_code_once(x, codebook, allowed_ids, metric, backend)
