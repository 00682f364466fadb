"""Collection-mode outputs: resumable JSONL and Parquet, one part per process.

One process writes the output as named. Under torchrun with ``WORLD_SIZE`` W > 1, rank r writes
its own part: ``<stem>-<r>-of-<W><suffix>`` beside a JSONL output, ``part-<r>-of-<W>-<n>.parquet``
files inside a Parquet output folder. Parts of another world size in the same place mean the run was
started with a different number of processes: that is refused (rerun with the original count, or
choose a new output), because the partition of the inputs would differ.

Records: ``path`` (the input's key), ``index`` (its position in the sorted input list), ``ids``
and ``text`` (absent/null for a learned VQ-VAE codebook). Parquet columns: ``path`` string, ``index``
int64, ``ids`` list<int32>, ``text`` string, with ``lqae_schema_version`` in the schema metadata.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from .common import UsageError

PARQUET_SCHEMA_VERSION = "1"
PARQUET_ROWS_PER_FILE = 4096


def _fsync_replace(tmp: Path, target: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


class JsonlWriter:
    """Appends one JSON line per record; on reopening, a last line cut by a crash is dropped."""

    def __init__(self, output: Path, rank: int, world_size: int) -> None:
        self.path = output if world_size == 1 else output.with_name(
            f"{output.stem}-{rank:05d}-of-{world_size:05d}{output.suffix}")
        others = sorted(p.name for p in output.parent.glob(f"{output.stem}-*-of-*{output.suffix}")
                        if not p.name.endswith(f"-of-{world_size:05d}{output.suffix}"))
        if world_size > 1 and output.exists():
            others.append(output.name)
        if others:
            raise UsageError(f"{output} already has parts from a run with another number of processes ({others[:3]}); "
                             f"rerun with that number of processes to resume, or choose a new --output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = None

    def done_keys(self) -> set[str]:
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(cut)
        return {json.loads(line)["path"] for line in data[:cut].decode("utf-8").splitlines() if line.strip()}

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            os.fsync(self.file.fileno())
            self.file.close()


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise UsageError('Parquet output needs pyarrow: pip install "lqae-tokenizer[parquet]"') from err
    return pa, pq


def parquet_schema():
    pa, _ = _pyarrow()
    return pa.schema([("path", pa.string()), ("index", pa.int64()), ("ids", pa.list_(pa.int32())),
                      ("text", pa.string())], metadata={b"lqae_schema_version": PARQUET_SCHEMA_VERSION.encode()})


class ParquetWriter:
    """Writes records into a folder of Parquet files of up to ``rows_per_file`` rows, each written
    whole (temporary name, fsync, rename), so a crash loses at most the rows not yet in a file."""

    def __init__(self, output: Path, rank: int, world_size: int, rows_per_file: int = PARQUET_ROWS_PER_FILE) -> None:
        self.folder, self.rows_per_file = output, rows_per_file
        self.prefix = f"part-{rank:05d}-of-{world_size:05d}-"
        self.pa, self.pq = _pyarrow()
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output} exists and is not a folder; Parquet output is a folder of part files")
        output.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(r"part-\d{5}-of-(\d{5})-\d{5}\.parquet")
        totals = {int(m.group(1)) for p in output.iterdir() if (m := pattern.fullmatch(p.name))}
        if totals - {world_size}:
            raise UsageError(f"{output} has parts from a run with {sorted(totals - {world_size})} processes; rerun with "
                             "that number of processes to resume, or choose a new --output")
        for stale in output.glob(f".{self.prefix}*"):  # a temporary file of a crashed write
            stale.unlink()
        self.buffer: list[dict[str, Any]] = []

    def _own_files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.prefix}*.parquet"))

    def done_keys(self) -> set[str]:
        return {key for f in self._own_files() for key in self.pq.read_table(f, columns=["path"]).column(0).to_pylist()}

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.buffer.extend(records)
        if len(self.buffer) >= self.rows_per_file:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        number = len(self._own_files())
        target = self.folder / f"{self.prefix}{number:05d}.parquet"
        tmp = self.folder / f".{target.name}.tmp"
        columns = {name: [r.get(name) for r in self.buffer] for name in ("path", "index", "ids", "text")}
        self.pq.write_table(self.pa.table(columns, schema=parquet_schema()), tmp)
        _fsync_replace(tmp, target)
        self.buffer = []

    def close(self) -> None:
        self._flush()


def open_writer(output: Path, fmt: str, rank: int, world_size: int):
    """The writer for ``--output`` (``fmt``: "jsonl" or "parquet")."""
    if fmt == "parquet":
        return ParquetWriter(output, rank, world_size)
    return JsonlWriter(output, rank, world_size)


def read_parquet_records(output: Path) -> list[dict[str, Any]]:
    """Every record of a Parquet output folder, in input order (by ``index``)."""
    _, pq = _pyarrow()
    rows = [row for f in sorted(output.glob("part-*.parquet")) for row in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["index"])
