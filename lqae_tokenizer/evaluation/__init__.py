"""Measuring what LQAE tokens carry: linear probes, few-shot episodes and prompts, reconstruction metrics."""

from ..llm.causal_lm import load_causal_lm
from .fewshot import (Episode, build_prompt, nearest_class_mean_accuracy, sample_episodes, score_labels,
                      score_labels_reference, score_queries, score_queries_batched)
from .metrics import codebook_statistics, mse, psnr, ssim
from .probe import LARS, linear_probe, official_linear_probe

__all__ = ["Episode", "build_prompt", "nearest_class_mean_accuracy", "sample_episodes", "score_labels",
           "score_labels_reference", "score_queries", "score_queries_batched", "load_causal_lm",
           "codebook_statistics", "mse", "psnr", "ssim", "linear_probe", "official_linear_probe", "LARS"]
