"""Regenerate the golden files: python tests/golden/make_golden.py

Only run this when a change of what ids or pixels mean is deliberate; commit the new files with a
message that says why. The checkpoint is built from a fixed seed over a small random RoBERTa (hidden
width 8) with roberta-base's real tokenizer, and bundles that language model so it needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from conftest import ROBERTA_TOKENIZER, TOKENIZER_FILES, random_image  # noqa: E402

SEED = 1234


def pixel_sha256(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image, dtype=np.uint8).tobytes()).hexdigest()


def build_checkpoint(target: Path) -> None:
    from transformers import RobertaConfig, RobertaForMaskedLM

    from lqae_tokenizer import ImageTokenizer, LQAEConfig

    lm = target.parent / "_lm"
    torch.manual_seed(SEED)
    config = RobertaConfig(vocab_size=50265, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1)
    RobertaForMaskedLM(config).save_pretrained(lm)
    for name in TOKENIZER_FILES:
        shutil.copy(ROBERTA_TOKENIZER / name, lm / name)
    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = ImageTokenizer(LQAEConfig.from_preset("tiny", language_model=str(lm), codebook_vocabulary="words"),
                             device="cpu")
    tok.save_pretrained(target, include_language_model=True)
    shutil.rmtree(lm)


def main() -> None:
    from lqae_tokenizer import ImageTokenizer

    shutil.rmtree(HERE / "checkpoint", ignore_errors=True)
    shutil.rmtree(HERE / "inputs", ignore_errors=True)
    (HERE / "inputs").mkdir()
    build_checkpoint(HERE / "checkpoint")
    for seed in range(4):
        Image.fromarray(random_image(100 + seed, 32, 32)).save(HERE / "inputs" / f"random{seed}.png")
    Image.fromarray(random_image(200, 40, 56)).save(HERE / "inputs" / "wide_resized.png")
    Image.open(HERE.parent / "data" / "fashion-mnist-320" / "7_00009.png").save(HERE / "inputs" / "sneaker.png")
    tok = ImageTokenizer.from_pretrained(HERE / "checkpoint", device="cpu")
    expected = {}
    for path in sorted((HERE / "inputs").glob("*.png")):
        ids = tok.encode(path)
        expected[path.name] = {"ids": ids, "text": tok.ids_to_text(ids), "pixels_sha256": pixel_sha256(tok.decode(ids))}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(expected)} golden cases to {HERE}")


if __name__ == "__main__":
    main()
