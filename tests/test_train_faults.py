"""Training under faults: SIGKILL at random moments (checkpoint writes included), a full disk."""

from __future__ import annotations

import errno
import json
import random
import time

import pytest

from lqae_tokenizer.training import run_state as checkpoints

from train_helpers import assert_identical, final_weights, run_train, start_train, train_args

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"


def last_logged_step(run) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def test_random_kills_lose_nothing_and_end_bit_identical(roberta_lm_dir, tmp_path):
    args = ["--max_train_steps", "24", "--checkpointing_steps", "3", "--checkpoints_total_limit", "2",
            "--log_every", "1"]
    reference = run_train(train_args(roberta_lm_dir, tmp_path / "reference", *args))
    assert reference.returncode == 0, reference.stderr[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(0)
    newest = 0
    for kill in range(5):  # each kill costs a process start (~5-8 s); 5 random moments, many inside writes
        resume = ["--resume_from_checkpoint", "latest"] if checkpoints.steps_present(run) else []
        proc = start_train(train_args(roberta_lm_dir, run, *args, *resume))
        # Let it run a random number of steps past the newest checkpoint, then kill it at a random
        # moment within the step (checkpoints every 3 steps: many kills land inside a write).
        target = newest + rng.randint(1, 7)
        deadline = time.time() + 180
        while last_logged_step(run) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        found = checkpoints.load_latest(run)
        if found is None:
            continue
        path, state, _ = found
        for step in checkpoints.steps_present(run):  # every folder named like a checkpoint is complete
            checkpoints.read_verified(run / f"checkpoint-{step}")
        assert state["progress"]["step"] >= newest, "a kill lost a checkpoint that had been completed"
        newest = state["progress"]["step"]
        if (run / "final").exists():
            break
    assert newest > 0
    finished = run_train(train_args(roberta_lm_dir, run, *args, "--resume_from_checkpoint", "latest"))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert_identical(final_weights(tmp_path / "reference"), final_weights(run))


def test_full_disk_during_checkpoint_is_an_error_not_a_save(roberta_lm_dir, tmp_path, monkeypatch):
    from lqae_tokenizer.train import parse_config
    from lqae_tokenizer.training.trainer import Trainer

    run = tmp_path / "run"
    trainer = Trainer(parse_config(train_args(roberta_lm_dir, run, "--max_train_steps", "4",
                                              "--checkpointing_steps", "2")))

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoints, "_write_file", no_space)
    with pytest.raises(OSError, match="No space left"):
        trainer.train()
    assert checkpoints.steps_present(run) == []
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint-")]  # no staging folder left
    assert not (run / "final").exists()


def test_kill_while_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    # Regression (seen once in CI's 20-kill test): keep-last-K deleted old checkpoints in place, so a
    # kill in the middle left a folder still named checkpoint-N with files missing.
    for step in (3, 6, 9):
        checkpoints.save(tmp_path, step, {"model.safetensors": b"w" * 100, "scheduler.pt": b"s" * 10}, {})
    real_rmtree = checkpoints.shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        (path / "scheduler.pt").unlink()  # part of the folder is gone when the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.prune(tmp_path, keep=2)
    monkeypatch.setattr(checkpoints.shutil, "rmtree", real_rmtree)
    assert checkpoints.steps_present(tmp_path) == [6, 9]
    for step in checkpoints.steps_present(tmp_path):
        checkpoints.read_verified(tmp_path / f"checkpoint-{step}")
    checkpoints.prune(tmp_path, keep=2)  # the next prune clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "checkpoint-9"]
