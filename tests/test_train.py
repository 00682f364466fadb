"""lqae-train on real images (Fashion-MNIST): learning, exact resume, safe checkpoints, signals, faults."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from lqae_tokenizer import ImageTokenizer
from lqae_tokenizer.training import run_state as checkpoints

from train_helpers import (FASHION, assert_identical, final_weights, metrics, run_train, start_train, train_args,
                           wait_for)

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"


def test_loss_falls_substantially(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "run", "--max_train_steps", "80", "--learning_rate", "2e-3",
                               "--checkpointing_steps", "1000"))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    first = sum(r["pixel_loss"] for r in rows[:5]) / 5
    last = sum(r["pixel_loss"] for r in rows[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    for key in ("loss", "pixel_loss", "commitment_loss", "mlm_loss", "codebook_usage", "perplexity", "lr",
                "grad_norm", "images_per_s", "skipped_files", "skipped_steps"):
        assert key in rows[-1], key
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-6)  # cosine to zero at the last step
    tok = ImageTokenizer.from_pretrained(tmp_path / "run" / "final")
    assert len(tok.encode(FASHION / "0_00019.png")) == 16


def test_sigkill_then_resume_is_bit_identical(roberta_lm_dir, tmp_path):
    args = ["--max_train_steps", "30", "--checkpointing_steps", "10"]
    full = run_train(train_args(roberta_lm_dir, tmp_path / "full", *args))
    assert full.returncode == 0, full.stderr[-3000:]
    proc = start_train(train_args(roberta_lm_dir, tmp_path / "cut", *args))
    wait_for(lambda: (tmp_path / "cut" / "checkpoint-20").exists(), proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert not (tmp_path / "cut" / "final").exists()
    resumed = run_train(train_args(roberta_lm_dir, tmp_path / "cut", *args, "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    steps = [r["step"] for r in metrics(tmp_path / "cut") if "loss" in r]
    assert steps == list(range(1, 31))  # the log reads as one run: no step twice, none missing


CRASH_IN_CHECKPOINT = """
import os, sys
from lqae_tokenizer import folders
from lqae_tokenizer.train import main
real_put_in_place = folders._put_in_place
def crash_before_the_swap(staging, target):
    if target.name == "checkpoint-20":
        os._exit(9)  # dies like SIGKILL: every file of checkpoint-20 written and fsynced, the swap never happens
    return real_put_in_place(staging, target)
folders._put_in_place = crash_before_the_swap
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_leaves_previous_checkpoint(roberta_lm_dir, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    args = train_args(roberta_lm_dir, run, "--max_train_steps", "30", "--checkpointing_steps", "10")
    proc = subprocess.run([sys.executable, "-c", CRASH_IN_CHECKPOINT, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 9
    assert checkpoints.steps_present(run) == [10]  # the half-done step-20 folder is not a checkpoint
    # ... it is the writer's hidden staging folder, complete but never swapped in:
    staged = [p for p in run.iterdir() if p.name.startswith(".checkpoint-20.")]
    assert len(staged) == 1 and (staged[0] / checkpoints.STATE_NAME).is_file()
    path, state, _ = checkpoints.load_latest(run)
    assert path.name == "checkpoint-10" and state["progress"]["step"] == 10
    resumed = run_train(args + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "final" / "model.safetensors").exists()


def test_sigterm_checkpoints_and_exits_zero(roberta_lm_dir, tmp_path):
    run = tmp_path / "run"
    proc = start_train(train_args(roberta_lm_dir, run, "--max_train_steps", "100000", "--checkpointing_steps", "100000"))
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(metrics(run)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    steps = checkpoints.steps_present(run)
    assert len(steps) == 1 and steps[0] >= 3
    assert not (run / "final").exists()  # stopped early: no export of an unfinished model


def test_sigterm_to_the_whole_process_group_still_checkpoints(roberta_lm_dir, tmp_path):
    # A cluster scheduler (SLURM's scancel, a pod's shutdown) signals every process of the job, data
    # loading workers included: the checkpoint must not depend on them being alive.
    run = tmp_path / "run"
    proc = start_train(train_args(roberta_lm_dir, run, "--max_train_steps", "100000", "--checkpointing_steps", "100000",
                                  "--dataloader_num_workers", "2"), start_new_session=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(metrics(run)) >= 3, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert len(checkpoints.steps_present(run)) == 1


def test_corrupt_files_are_skipped_and_reported(roberta_lm_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FASHION, data)
    (data / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (data / "zz_text.jpg").write_text("not a jpeg")
    out = run_train(train_args(roberta_lm_dir, tmp_path / "ok", "--max_train_steps", "40", data=data))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "zz_broken.png" in out.stderr and "zz_text.jpg" in out.stderr
    assert metrics(tmp_path / "ok")[-1]["skipped_files"] >= 2
    # Mostly broken data: abort with a clear message.
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(30):
        (bad / f"{i}.png").write_bytes(b"garbage")
    shutil.copy(FASHION / "0_00019.png", bad / "good.png")
    out = run_train(train_args(roberta_lm_dir, tmp_path / "abort", "--max_train_steps", "5", data=bad))
    assert out.returncode == 1
    assert "unreadable" in out.stderr and "max_bad_file_fraction" in out.stderr


def test_nan_steps_are_skipped_counted_and_abort_when_persistent(roberta_lm_dir, tmp_path):
    from lqae_tokenizer.train import parse_config
    from lqae_tokenizer.training.trainer import Trainer, TrainingAborted

    config = parse_config(train_args(roberta_lm_dir, tmp_path / "nan", "--max_train_steps", "12",
                                     "--checkpointing_steps", "1000"))
    trainer = Trainer(config)
    lm_before = {k: v.clone() for k, v in trainer.model.language_model.state_dict().items()}
    real_forward = trainer.forward_model.forward
    calls = {"n": 0}

    def poisoned(pixels, **kw):
        calls["n"] += 1
        out = real_forward(pixels, **kw)
        if calls["n"] in (3, 7, 8):
            out.loss = out.loss * float("nan")
        return out

    trainer.forward_model.forward = poisoned
    assert trainer.train() == 0
    assert trainer.progress.steps_skipped == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.trainable_parameters())
    for k, v in trainer.model.language_model.state_dict().items():
        assert torch.equal(v, lm_before[k]), k  # the frozen LM never changes

    config.run.output_dir = str(tmp_path / "nan2")
    config.run.max_train_steps = 20
    trainer = Trainer(config)
    real = trainer.forward_model.forward

    def always_nan(pixels, **kw):
        out = real(pixels, **kw)
        out.loss = out.loss * float("nan")
        return out

    trainer.forward_model.forward = always_nan
    with pytest.raises(TrainingAborted, match="5 non-finite steps in a row"):
        trainer.train()


def test_fine_tune_from_a_checkpoint(roberta_lm_dir, tmp_path):
    first = run_train(train_args(roberta_lm_dir, tmp_path / "a", "--max_train_steps", "5"))
    assert first.returncode == 0, first.stderr[-2000:]
    out = run_train(train_args(roberta_lm_dir, tmp_path / "b", "--max_train_steps", "5", "--init_from",
                               str(tmp_path / "a" / "final")))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    # b's model card says what it started from and how that was trained, without this machine's path.
    from huggingface_hub import ModelCard

    card = (tmp_path / "b" / "final" / "README.md").read_text()
    facts = ModelCard(card).data.to_dict()["lqae_training"]
    assert facts["init_from"] == "a/final" and facts["steps"] == 5
    assert facts["init_from_training"]["steps"] == 5 and "metrics" not in facts["init_from_training"]
    assert str(tmp_path) not in card


def test_stop_after_steps_cuts_the_run_and_a_resume_finishes_it_identically(roberta_lm_dir, tmp_path):
    args = ["--max_train_steps", "8", "--checkpointing_steps", "2"]
    full = run_train(train_args(roberta_lm_dir, tmp_path / "full", *args))
    assert full.returncode == 0, full.stderr[-3000:]
    cut = run_train(train_args(roberta_lm_dir, tmp_path / "cut", *args, "--stop_after_steps", "4"))
    assert cut.returncode == 0, cut.stderr[-3000:]
    rows = [r for r in metrics(tmp_path / "cut") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    full_rows = [r for r in metrics(tmp_path / "full") if "loss" in r]
    # The schedule is the 8-step run's: at step 4 the rate is that run's, not a cosine ending at 0.
    assert rows[-1]["lr"] == full_rows[3]["lr"] > 0
    assert (tmp_path / "cut" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "cut" / "checkpoint-4").is_dir() and not (tmp_path / "cut" / "checkpoint-6").exists()
    resumed = run_train(train_args(roberta_lm_dir, tmp_path / "cut", *args, "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))


def test_freeze_encoder_trains_the_decoder_and_keeps_every_id(roberta_lm_dir, tmp_path):
    entropy = tmp_path / "entropy.json"
    entropy.write_text('{"model": {"codebook_entropy_weight": 0.1}}')
    first = run_train(train_args(roberta_lm_dir, tmp_path / "a", "--max_train_steps", "3", "--config", str(entropy)))
    assert first.returncode == 0, first.stderr[-2000:]
    out = run_train(train_args(roberta_lm_dir, tmp_path / "b", "--max_train_steps", "4", "--learning_rate", "2e-3",
                               "--config", str(entropy), "--init_from", str(tmp_path / "a" / "final"),
                               "--freeze_encoder"))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    encoder = [k for k in a if k.startswith("encoder.")]
    decoder = [k for k in a if k.startswith("decoder.")]
    assert encoder and decoder
    assert all(torch.equal(a[k], b[k]) for k in encoder)
    assert any(not torch.equal(a[k], b[k]) for k in decoder)
    before, after = (ImageTokenizer.from_pretrained(tmp_path / run / "final") for run in ("a", "b"))
    images = sorted(FASHION.glob("*.png"))[:8]
    assert [before.encode(i) for i in images] == [after.encode(i) for i in images]
    # The entropy term only moves the encoder: on while it trains, skipped (0) once it is frozen.
    assert all(r["entropy_loss"] != 0.0 for r in metrics(tmp_path / "a") if "loss" in r)
    assert all(r["entropy_loss"] == 0.0 for r in metrics(tmp_path / "b") if "loss" in r)


def test_projected_search_trains_then_freezes_with_its_projection(roberta_lm_dir, tmp_path):
    # The photo tokenizer's options from a config file (decoder_layers as a JSON list), trained end to
    # end (the projection moves), then fine-tuned with --freeze_encoder (projection and ids kept).
    settings = tmp_path / "projected.json"
    settings.write_text('{"model": {"search_dim": 12, "metric": "l2", "decoder_layers": [0, -1], '
                        '"decoder_skip": true, "mask_ratio": 0.0}}')
    first = run_train(train_args(roberta_lm_dir, tmp_path / "a", "--max_train_steps", "3", "--learning_rate", "2e-3",
                                 "--config", str(settings)))
    assert first.returncode == 0, first.stderr[-2000:]
    out = run_train(train_args(roberta_lm_dir, tmp_path / "b", "--max_train_steps", "3", "--learning_rate", "2e-3",
                               "--config", str(settings), "--init_from", str(tmp_path / "a" / "final"),
                               "--freeze_encoder"))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a["quantizer.projection"].shape == (32, 12)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "quantizer.")))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder.skip"))
    before, after = (ImageTokenizer.from_pretrained(tmp_path / run / "final") for run in ("a", "b"))
    assert after.config.decoder_layers == (0, -1) and after.config.search_dim == 12
    images = sorted(FASHION.glob("*.png"))[:8]
    assert [before.encode(i) for i in images] == [after.encode(i) for i in images]


def test_freeze_encoder_without_init_from_is_refused(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "run", "--max_train_steps", "2", "--freeze_encoder"))
    assert out.returncode == 2 and "freeze_encoder" in out.stderr and "--init_from" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_training_checkpoint_exports_and_fine_tunes_like_final(roberta_lm_dir, tmp_path):
    from lqae_tokenizer.training.trainer import tokenizer_from_checkpoint

    first = run_train(train_args(roberta_lm_dir, tmp_path / "a", "--max_train_steps", "6", "--checkpointing_steps", "3"))
    assert first.returncode == 0, first.stderr[-2000:]
    final = ImageTokenizer.from_pretrained(tmp_path / "a" / "final")
    last = tokenizer_from_checkpoint(tmp_path / "a" / "checkpoint-6")
    earlier = tokenizer_from_checkpoint(tmp_path / "a" / "checkpoint-3")
    image = sorted(FASHION.glob("*.png"))[0]
    assert last.encode(image) == final.encode(image)
    assert any(not torch.equal(a, b) for a, b in zip(earlier.model.trainable_parameters(),
                                                      last.model.trainable_parameters()))
    # The LM moved since (another folder, same model): --language_model says where it now is. The
    # fine-tuned model still records run a's name for it (it used to refuse: "language_model differs").
    moved = shutil.copytree(roberta_lm_dir, tmp_path / "moved" / "lm")
    out = run_train(train_args(moved, tmp_path / "b", "--max_train_steps", "2", "--init_from",
                               str(tmp_path / "a" / "checkpoint-3")))
    assert out.returncode == 0, out.stderr[-2000:]
    recorded = ImageTokenizer.from_pretrained(tmp_path / "b" / "final", language_model=moved).config.language_model
    assert recorded == final.config.language_model == str(roberta_lm_dir)


def test_resume_latest_with_nothing_to_resume(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "empty", "--max_train_steps", "5",
                               "--resume_from_checkpoint", "latest"))
    assert out.returncode == 1 and "no complete checkpoint" in out.stderr


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(roberta_lm_dir, tmp_path):
    run = tmp_path / "run"
    out = run_train(train_args(roberta_lm_dir, run, "--max_train_steps", "20", "--checkpointing_steps", "10"))
    assert out.returncode == 0
    weights = run / "checkpoint-20" / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(data))
    path, state, _ = checkpoints.load_latest(run)
    assert path.name == "checkpoint-10"
    with pytest.raises(checkpoints.CheckpointCorrupt, match="does not match its checksum"):
        checkpoints.read_verified(run / "checkpoint-20")


def test_keep_last_k_checkpoints(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "run", "--max_train_steps", "20", "--checkpointing_steps", "5",
                               "--checkpoints_total_limit", "2"))
    assert out.returncode == 0
    assert checkpoints.steps_present(tmp_path / "run") == [15, 20]


def test_read_only_output_dir_is_a_clear_error(roberta_lm_dir, tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits: use a path under a file instead (mkdir fails the same way)
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "run"
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    out = run_train(train_args(roberta_lm_dir, target, "--max_train_steps", "2"))
    assert out.returncode == 1
    assert "lqae-train: cannot write the run's files" in out.stderr and "Traceback" not in out.stderr
    assert not Path(target, "final").exists()
