"""Tokenizing whole datasets: torchrun processes, resume after a killed rank, Parquet, list files, tar
shards and Hugging Face datasets, all against single-process ids of the same real images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import DATA

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"

IMAGES = DATA / "fashion-mnist-320"


@pytest.fixture(scope="module")
def model(word_tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("collection") / "model"
    word_tokenizer.save_pretrained(folder)
    return folder


def tokenize(*args, processes: int = 1, wait: bool = True, env_extra: dict | None = None):
    command = [sys.executable, "-m", "lqae_tokenizer.cli.tokenize", *map(str, args)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", "0", "-m", "lqae_tokenizer.cli.tokenize", *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def records(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(model, tmp_path_factory) -> dict[str, list[int]]:
    out = tmp_path_factory.mktemp("single") / "ids.jsonl"
    run = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = records([out])
    assert [r["index"] for r in rows] == list(range(320))
    return {r["path"]: r["ids"] for r in rows}


def test_two_torchrun_processes_give_the_single_process_ids_each_image_once(model, single, tmp_path):
    out = tmp_path / "ids.jsonl"
    run = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "8", processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    parts = sorted(tmp_path.glob("ids-*-of-00002.jsonl"))
    assert [p.name for p in parts] == ["ids-00000-of-00002.jsonl", "ids-00001-of-00002.jsonl"]
    rows = records(parts)
    assert sorted(r["path"] for r in rows) == sorted(single)  # every image exactly once
    assert {r["path"]: r["ids"] for r in rows} == single
    first = records(parts[:1])
    assert all((r["index"] // 8) % 2 == 0 for r in first)  # rank 0 holds batches 0, 2, 4, ...
    again = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "8")  # other world size
    assert again.returncode == 2 and "another number of processes" in again.stderr


def test_a_killed_rank_is_resumed_without_duplicates(model, single, tmp_path):
    out = tmp_path / "ids.jsonl"
    proc = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "2", processes=2, wait=False)
    part = tmp_path / "ids-00001-of-00002.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 10):
        time.sleep(0.05)
    # Mid-run: the workers (torchrun starts each in a session of its own), then torchrun itself.
    subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    written = part.read_text()
    assert 10 <= written.count("\n") < 160, "the kill should land mid-run"
    part.write_text(written + written.splitlines()[0][:20])  # and a line cut in half
    again = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "2", processes=2)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = records(sorted(tmp_path.glob("ids-*-of-00002.jsonl")))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 320
    assert {r["path"]: r["ids"] for r in rows} == single


def test_parquet_output_round_trips(model, single, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from lqae_tokenizer.cli.writers import read_parquet_records

    out = tmp_path / "ids.parquet"
    run = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = read_parquet_records(out)
    assert [r["index"] for r in rows] == list(range(320))
    assert {r["path"]: r["ids"] for r in rows} == single
    assert all(r["text"] for r in rows)
    table = pq.read_table(next(out.glob("part-*.parquet")))
    assert str(table.schema.field("ids").type) == "list<element: int32>"
    assert table.schema.metadata[b"lqae_schema_version"] == b"1"
    resumed = tokenize(IMAGES, "--model", model, "--output", out, "--batch-size", "8")
    assert resumed.returncode == 0 and "320 already written" in resumed.stderr
    assert len(read_parquet_records(out)) == 320


def test_list_files_and_tar_shards(model, single, tmp_path):
    files = sorted(IMAGES.glob("*.png"))[:12]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(f) for f in files[:5]) + "\n")
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for f in files[5:]:
            tar.add(f, arcname=f"{f.stem}.png")
            meta = tmp_path / f"{f.stem}.json"
            meta.write_text("{}")
            tar.add(meta, arcname=f"{f.stem}.json")  # WebDataset side files are skipped
    out = tmp_path / "ids.jsonl"
    run = tokenize(listing, shard, "--model", model, "--output", out, "--batch-size", "4")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = records([out])
    assert len(rows) == 12
    for row in rows:
        name = row["path"].split("::")[-1]
        original = next(str(f) for f in files if f.name == Path(name).name)
        assert row["ids"] == single[original]
    assert sum("::" in r["path"] for r in rows) == 7


def test_datasets_map_gives_the_ids_of_encode(word_tokenizer, model, tmp_path):
    datasets = pytest.importorskip("datasets")
    from lqae_tokenizer import ImageTokenizer

    tok = ImageTokenizer.from_pretrained(model, device="cpu")
    files = [str(f) for f in sorted(IMAGES.glob("*.png"))[:24]]
    ds = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())
    mapped = ds.map(tok.datasets_map_fn(), batched=True, batch_size=8, num_proc=2)
    assert mapped["input_ids"] == tok.encode(files)
    assert mapped["text"][0] == tok.to_text(files[0])
    mapped.save_to_disk(str(tmp_path / "saved"))
    assert datasets.load_from_disk(str(tmp_path / "saved"))["input_ids"] == mapped["input_ids"]
    ranked = ds.map(tok.datasets_map_fn(), batched=True, batch_size=8, with_rank=True, num_proc=2)
    assert ranked["input_ids"] == mapped["input_ids"]
    with pytest.raises(ValueError, match="no column 'picture'"):
        ds.map(tok.datasets_map_fn(image_column="picture"), batched=True)
