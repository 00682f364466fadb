"""A causal LM that reads and draws images through an image tokenizer's words (LoRA, ``[llm]`` extra).

- :class:`ImageLM`: ``from_pretrained`` / ``save_pretrained``, ``classify(images)``, ``draw(label, n, seed)``.
- :class:`PromptFormat`: ``input: <words> output: <label>`` for reading, ``output: <label> input: <words>``
  for drawing.
- :class:`WordTrie`, :class:`CodebookWordsProcessor`: generation constrained to exactly
  ``tokens_per_image`` codebook words.
- :func:`train_adapter`: ``transformers.Trainer`` + ``peft`` LoRA (``lqae-llm train``).

Importing this package does not import peft or transformers; using it needs them.
"""

from .constrained import CodebookWordsProcessor, WordTrie
from .image_lm import ImageLM, codebook_words
from .prompt import PromptFormat, check_labels

__all__ = ["ImageLM", "PromptFormat", "WordTrie", "CodebookWordsProcessor", "check_labels", "codebook_words",
           "train_adapter", "AdapterTrainingConfig"]


def __getattr__(name: str):
    if name in ("train_adapter", "AdapterTrainingConfig"):
        from . import training

        return getattr(training, name)
    raise AttributeError(name)
