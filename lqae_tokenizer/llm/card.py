"""The README.md (model card) of an ImageLM folder: what it is, its prompt format, how it was trained."""

from __future__ import annotations

import json
from typing import Any

from ..model_card import card_with_metadata


def build_card(config: dict[str, Any], measured: str | None = None) -> str:
    """Markdown for ``image_lm.json``'s content; ``measured`` adds a results section verbatim."""
    training = config.get("training") or {}
    tasks = training.get("tasks", ["read", "draw"])
    read = config["prompt"]["read"].format(words="<w1> ... <wN>") + " <label>"
    draw = config["prompt"]["draw"].format(label="<label>") + " <w1> ... <wN>"
    words = f"the words of the image tokenizer `{config['image_tokenizer']}` ({config['tokens_per_image']} words per image)"
    does = {"read": f"classifies images written as {words}",
            "draw": ("writes such words" if "read" in tasks else f"writes {words}")
            + " for a named class, which the tokenizer decodes into a picture"}
    title = " and ".join({"read": "reads", "draw": "draws"}[t] for t in ("read", "draw") if t in tasks)
    lines = [
        f"# ImageLM: a causal LM that {title} images as words", "",
        f"A LoRA adapter for `{config['language_model']}` that "
        + " and ".join(does[t] for t in ("read", "draw") if t in tasks)
        + ". Load it with `lqae_tokenizer.llm.ImageLM.from_pretrained(folder)`.", "",
    ]
    if "read" not in tasks:  # classify/rerank refuse it (ImageLM.scores_of_texts); say so up front
        lines += ["It was trained to draw only: it does not classify. Rank its drawings with an adapter "
                  "trained to read: `draw(label, n, candidates=k, reader=that_adapter)`.", ""]
    if "draw" not in tasks:  # draw refuses it (ImageLM.check_draw)
        lines += ["It was trained to read only: it does not draw. Use it to classify, or to rank the samples "
                  "of an adapter trained to draw: `drawer.draw(label, n, candidates=k, reader=this_adapter)`.", ""]
    prompts = {"read": ("reading", read), "draw": ("drawing", draw)}
    shown = [prompts[t] for t in ("read", "draw") if t in tasks]
    lines += [f"Labels: {', '.join(config['labels'])}.", "",
              f"Prompt format ({', then '.join(name for name, _ in shown)}):", "", "```",
              *(line for _, line in shown), "```", ""]
    width = config["prompt"].get("words_per_line", 0)
    if width:
        lines += [f"The words are written as grid rows: a line break (then a space) after every {width} words.", ""]
    if training:
        lines += [
            "## Training", "",
            f"Trained on {training.get('images', '?')} labelled images ({training.get('examples', '?')} examples, "
            f"tasks {', '.join(training.get('tasks', []))}) from {', '.join(training.get('data', []))} for "
            f"{training.get('epochs', '?')} epoch(s), {training.get('optimizer_steps', '?')} optimizer steps, "
            f"{training.get('seconds', '?')} s on {training.get('device', '?')}"
            + (f" (resumed at step {training['resumed_from_step']}: the seconds are the steps after it)"
               if training.get("resumed_from_step") else "") + ".", "",
            "```json", json.dumps(training, indent=1, sort_keys=True), "```", "",
        ]
    if measured:
        lines += ["## Measured", "", measured.strip(), ""]
    metadata = {"library_name": "lqae-tokenizer", "tags": ["lqae", "peft", "lora", "image-to-text"],
                "language_model": config["language_model"], "image_tokenizer": config["image_tokenizer"],
                "tokens_per_image": config["tokens_per_image"], "labels": config["labels"], "tasks": list(tasks),
                "lqae_pins": config.get("pins") or None}
    return str(card_with_metadata(metadata, "\n".join(lines), config["language_model"]))
