"""Dead-code restarts of a learned (VQ-VAE) codebook: which rows move, where to, their optimiser moments,
exact resume, and what lqae-train refuses."""

from __future__ import annotations

import json

import pytest
import torch

from lqae_tokenizer.train import parse_config
from lqae_tokenizer.training.dead_codes import CodeUsage, replacement_rows, reset_moments
from lqae_tokenizer.training.distributed import DistributedContext
from lqae_tokenizer.training.trainer import Trainer

from train_helpers import FASHION, assert_identical, final_weights, metrics, run_train, train_args

LEARNED_FLAGS = ("--quantizer", "learned", "--mask_ratio", "0")


def test_usage_counts_every_chosen_row_and_a_check_starts_a_new_window():
    usage = CodeUsage(6, every=3)
    usage.observe(torch.tensor([[0, 0, 2], [5, 2, 0]]))
    usage.observe(torch.tensor([2]))
    assert usage.counts.tolist() == [3, 0, 3, 0, 0, 1]
    assert [usage.due(s) for s in range(1, 7)] == [False, False, True, False, False, True]
    assert usage.dead_rows(DistributedContext()).tolist() == [False, True, False, True, True, False]
    assert usage.counts.tolist() == [0] * 6  # the next window starts empty
    assert usage.dead_rows(DistributedContext()).all()
    with pytest.raises(ValueError, match="at least 1 step"):
        CodeUsage(6, every=0)
    with pytest.raises(ValueError, match="this codebook has 6"):
        usage.load_state_dict({"counts": torch.zeros(7)})


def test_replacement_rows_are_distinct_while_there_are_enough_and_cover_all_when_not():
    candidates = torch.arange(10.0).unsqueeze(1).repeat(1, 3)  # row i is (i, i, i)
    picked = replacement_rows(candidates, 10, torch.Generator().manual_seed(0))
    assert sorted(picked[:, 0].tolist()) == list(range(10))  # all ten, each once
    few = replacement_rows(candidates, 4, torch.Generator().manual_seed(1))
    assert len(set(few[:, 0].tolist())) == 4
    many = replacement_rows(candidates, 25, torch.Generator().manual_seed(2))
    assert many.shape == (25, 3) and set(many[:, 0].tolist()) == set(range(10))
    again = replacement_rows(candidates, 25, torch.Generator().manual_seed(2))
    assert torch.equal(many, again)  # seeded
    with pytest.raises(ValueError, match="empty batch"):
        replacement_rows(candidates[:0], 1, torch.Generator())


def test_reset_moments_zeroes_only_the_given_rows():
    weight = torch.nn.Parameter(torch.randn(5, 4))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.randn(5, 4)
    optimizer.step()
    before = {k: v.clone() for k, v in optimizer.state[weight].items()}
    rows = torch.tensor([False, True, False, False, True])
    reset_moments(optimizer, weight, rows)
    for key in ("exp_avg", "exp_avg_sq"):
        assert optimizer.state[weight][key][rows].abs().sum() == 0
        assert torch.equal(optimizer.state[weight][key][~rows], before[key][~rows])
    assert torch.equal(optimizer.state[weight]["step"], before["step"])


def restarts(tmp_path, every: int) -> tuple[str, str]:
    """The --config arguments that restart dead rows every ``every`` steps (the setting has no flag)."""
    path = tmp_path / f"restarts-{every}.json"
    path.write_text(json.dumps({"optim": {"codebook_restart_steps": every}}))
    return "--config", str(path)


def _trainer(roberta_lm_dir, tmp_path, name: str, *extra: str) -> Trainer:
    args = train_args(roberta_lm_dir, tmp_path / name, *LEARNED_FLAGS, "--max_train_steps", "5", *extra)
    return Trainer(parse_config(args))


def _micro_batch(trainer: Trainer):
    loader = trainer._batches()
    return next(loader)


def test_a_restart_moves_exactly_the_unchosen_rows_to_encoder_outputs(roberta_lm_dir, tmp_path):
    plain = _trainer(roberta_lm_dir, tmp_path, "plain")
    restarting = _trainer(roberta_lm_dir, tmp_path, "restarting", *restarts(tmp_path, 1))
    assert_identical(plain.model.trainable_state_dict(), restarting.model.trainable_state_dict())
    pixels, seeds, failed = _micro_batch(plain)
    with torch.no_grad():  # the rows the step's forward chooses (under the weights before the step)
        chosen = plain.model(pixels).ids.unique()
    dead = torch.ones(plain.model.codebook.num_embeddings, dtype=torch.bool)
    dead[chosen] = False
    assert 0 < int(dead.sum()) < len(dead)  # a fresh tiny VQ-VAE leaves rows unchosen: the case under test

    plain._optimizer_step([(pixels, seeds, failed)])
    restarting._optimizer_step([(pixels, seeds, failed)])
    after_plain, after_restart = plain.model.codebook.weight.detach(), restarting.model.codebook.weight.detach()
    # Chosen rows take the plain optimiser step, to the bit; their moments too.
    assert torch.equal(after_restart[~dead], after_plain[~dead])
    state_plain, state_restart = plain.optimizer.state[plain.model.codebook.weight], \
        restarting.optimizer.state[restarting.model.codebook.weight]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(state_restart[key][~dead], state_plain[key][~dead])
        assert state_restart[key][dead].abs().sum() == 0
    # Every dead row is now one of the batch's encoder outputs (after the step), as many distinct ones as
    # the batch has (a fresh 1,024-row codebook has more dead rows than this batch has tokens).
    with torch.no_grad():
        outputs = restarting.model.encoder(pixels).reshape(-1, after_restart.shape[1])
    moved = after_restart[dead]
    matches = (moved.unsqueeze(1) == outputs.unsqueeze(0)).all(-1)  # [dead, B*N]
    assert bool(matches.any(1).all()), "a restarted row is not an encoder output of the step's batch"
    assert len(torch.unique(moved, dim=0)) == min(len(moved), len(torch.unique(outputs, dim=0)))
    assert restarting.progress.codes_restarted == int(dead.sum())
    # The rest of the model is untouched by the restart.
    for key, value in plain.model.trainable_state_dict().items():
        if key != "codebook.weight":
            assert torch.equal(restarting.model.trainable_state_dict()[key], value), key


def test_counts_of_the_open_window_survive_a_checkpoint(roberta_lm_dir, tmp_path):
    trainer = _trainer(roberta_lm_dir, tmp_path, "run", *restarts(tmp_path, 4), "--checkpointing_steps", "1")
    batch = _micro_batch(trainer)
    trainer._optimizer_step([batch])
    trainer.progress.step = 1
    counts = trainer.code_usage.counts.clone()
    assert counts.sum() == batch[0].shape[0] * trainer.model.config.tokens_per_image
    trainer.save_checkpoint()
    fresh = _trainer(roberta_lm_dir, tmp_path, "run", *restarts(tmp_path, 4))
    fresh.resume("latest")
    assert torch.equal(fresh.code_usage.counts, counts)


def test_language_codebooks_and_frozen_encoders_are_refused(roberta_lm_dir, tmp_path):
    args = train_args(roberta_lm_dir, tmp_path / "run", *restarts(tmp_path, 5), "--max_train_steps", "2")
    with pytest.raises(ValueError, match="quantizer='learned' or codebook_restart_steps=0"):
        Trainer(parse_config(args))
    with pytest.raises(ValueError, match="integer >= 0"):
        parse_config(train_args(roberta_lm_dir, tmp_path / "run", *restarts(tmp_path, -1)))
    with pytest.raises(ValueError, match="set codebook_restart_steps=0 or drop freeze_encoder"):
        parse_config(train_args(roberta_lm_dir, tmp_path / "run", *LEARNED_FLAGS, *restarts(tmp_path, 5),
                                "--freeze_encoder", "--init_from", str(tmp_path)))


@pytest.mark.slow
def test_restarts_use_the_codebook_and_a_cut_run_resumes_identically(roberta_lm_dir, tmp_path):
    common = [*LEARNED_FLAGS, "--max_train_steps", "8", "--checkpointing_steps", "3"]
    plain = run_train(train_args(roberta_lm_dir, tmp_path / "plain", *common))
    assert plain.returncode == 0, plain.stderr[-3000:]
    full = run_train(train_args(roberta_lm_dir, tmp_path / "full", *common, *restarts(tmp_path, 2)))
    assert full.returncode == 0, full.stderr[-3000:]
    # Cut at step 3, inside the window of steps 3-4: the resumed run needs step 3's counts to match.
    cut = run_train(train_args(roberta_lm_dir, tmp_path / "cut", *common, *restarts(tmp_path, 2),
                               "--stop_after_steps", "3"))
    assert cut.returncode == 0, cut.stderr[-3000:]
    resumed = run_train(train_args(roberta_lm_dir, tmp_path / "cut", *common, *restarts(tmp_path, 2),
                                   "--resume_from_checkpoint", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    rows = [r for r in metrics(tmp_path / "full") if "loss" in r]
    assert rows[-1]["codes_restarted"] > 0 and "codes_restarted" not in metrics(tmp_path / "plain")[-1]

    from lqae_tokenizer import ImageTokenizer

    images = sorted(FASHION.glob("*.png"))
    used = {name: len({i for ids in ImageTokenizer.from_pretrained(tmp_path / name / "final").encode(images)
                       for i in ids}) for name in ("plain", "full")}
    assert used["full"] > used["plain"], used


def test_the_restart_draw_is_seeded_by_the_run_not_the_global_generator(roberta_lm_dir, tmp_path):
    one = _trainer(roberta_lm_dir, tmp_path, "one", *restarts(tmp_path, 1))
    two = _trainer(roberta_lm_dir, tmp_path, "two", *restarts(tmp_path, 1))
    batch = _micro_batch(one)
    torch.manual_seed(123)
    one._optimizer_step([batch])
    torch.manual_seed(456)
    two._optimizer_step([batch])
    assert torch.equal(one.model.codebook.weight, two.model.codebook.weight)


def test_the_restarting_preset_is_the_vqvae_recipe_with_a_25_step_window(tmp_path):
    from lqae_tokenizer.training.config import resolve_config

    plain = resolve_config("demo-vqvae", None, {"train_data_dir": str(FASHION)})
    restarting = resolve_config("demo-vqvae-restarts", None, {"train_data_dir": str(FASHION)})
    assert restarting.optim.codebook_restart_steps == 25 and plain.optim.codebook_restart_steps == 0
    restarting.optim.codebook_restart_steps = 0
    assert restarting.to_dict() == plain.to_dict()
