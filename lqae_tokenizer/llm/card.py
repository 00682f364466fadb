"""The README.md (model card) of an ImageLM folder: what it is, its prompt format, how it was trained."""

from __future__ import annotations

import json
from typing import Any


def build_card(config: dict[str, Any], measured: str | None = None) -> str:
    """Markdown for ``image_lm.json``'s content; ``measured`` adds a results section verbatim."""
    training = config.get("training") or {}
    read = config["prompt"]["read"].format(words="<w1> ... <wN>") + " <label>"
    draw = config["prompt"]["draw"].format(label="<label>") + " <w1> ... <wN>"
    lines = [
        "---", "library_name: lqae-tokenizer", "tags: [lqae, peft, lora, image-to-text]", "---", "",
        "# ImageLM: a causal LM that reads and draws images as words", "",
        f"A LoRA adapter for `{config['language_model']}` that classifies images written as the words of the image "
        f"tokenizer `{config['image_tokenizer']}` ({config['tokens_per_image']} words per image) and writes such "
        "words for a named class, which the tokenizer decodes into a picture. Load it with "
        "`lqae_tokenizer.llm.ImageLM.from_pretrained(folder)`.", "",
        f"Labels: {', '.join(config['labels'])}.", "",
        "Prompt format (reading, then drawing):", "", "```", read, draw, "```", "",
    ]
    width = config["prompt"].get("words_per_line", 0)
    if width:
        lines += [f"The words are written as grid rows: a line break (then a space) after every {width} words.", ""]
    if training:
        lines += [
            "## Training", "",
            f"Trained on {training.get('images', '?')} labelled images ({training.get('examples', '?')} examples, "
            f"tasks {', '.join(training.get('tasks', []))}) from {', '.join(training.get('data', []))} for "
            f"{training.get('epochs', '?')} epoch(s), {training.get('optimizer_steps', '?')} optimizer steps, "
            f"{training.get('seconds', '?')} s on {training.get('device', '?')}.", "",
            "```json", json.dumps(training, indent=1, sort_keys=True), "```", "",
        ]
    if measured:
        lines += ["## Measured", "", measured.strip(), ""]
    return "\n".join(lines)
