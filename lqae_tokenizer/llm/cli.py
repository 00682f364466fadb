"""``lqae-llm``: train an ImageLM's LoRA adapter, measure it, classify images and draw classes, offline.

    lqae-llm train --data fm-train.jsonl --label-names labels.json --output runs/llm   # Trainer + peft
    lqae-llm evaluate --model runs/llm/final --data fm-test.jsonl --label-names labels.json --limit 1000
    lqae-llm classify --model fashion-mnist-smollm2-read shoe.png coat.png
    lqae-llm labels fashion-mnist-smollm2-read                                     # its labels and tasks
    lqae-llm draw --model fashion-mnist-smollm2-draw --reader fashion-mnist-smollm2-read --candidates 8 \
        --label trouser --n 8 --output trousers.png   # a drawing adapter, a reading one picks the best of 8

``--data``: ``lqae-tokenize DIR --output x.jsonl`` files (labels = the images' parent folder names)
or ``datasets`` folders with ``text`` and ``label`` columns. ``--label-names``: a JSON object or
``0=T-shirt,1=trouser,...`` renaming raw labels. ``--model``: an ImageLM folder, a bundled name or a
Hub id. Every mistake that can be found before the LM loads is (names, labels, tasks, image files,
output places): one line on stderr, exit status 2. ``--help`` on each subcommand lists its options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..bundled import IMAGE_LM, names
from ..checkpoint import CheckpointError
from ..cli.common import UsageError

PROG = "lqae-llm"
MAX_DRAWINGS = 256  # --n: drawings in one PNG row
MAX_SCALE = 32  # --scale: a 32x32 drawing becomes at most 1024x1024 pixels
TASK_ADVICE = {"read": "use a reading adapter, e.g. fashion-mnist-smollm2-read",
               "draw": "use a drawing adapter, e.g. fashion-mnist-smollm2-draw"}


def parse_label_names(value: str | None) -> dict[str, str] | None:
    """``'0=T-shirt,1=trouser'``, a JSON object, or a path to a JSON file -> ``{raw: name}``."""
    if value is None:
        return None
    text = Path(value).read_text() if Path(value).is_file() else value
    if text.lstrip().startswith("{"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--label-names: not valid JSON ({err})") from err
    else:
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise UsageError(f"--label-names: expected RAW=NAME pairs separated by commas, got {value!r}")
        names = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise UsageError("--label-names: expected an object mapping raw labels to names")
    return {str(k): v for k, v in names.items()}


# AdapterTrainingConfig field -> (flag, help). The defaults come from the dataclass, never repeated here.
TRAIN_FLAGS = {
    "image_tokenizer": ("--image-tokenizer", "bundled name, folder or Hub id of the tokenizer that wrote --data"),
    "language_model": ("--lm", "causal LM: Hub id, folder, .gguf or pkg:<module>/<file>"),
    "tasks": ("--tasks", "comma list of read, draw"),
    "words_per_line": ("--words-per-line", "lay each image's words out as grid rows of N words, a line break "
                                           "between rows (8 for an 8x8 grid; 0: one line, the paper's format)"),
    "max_images": ("--max-images", "use the first N images after a seeded shuffle (default: all)"),
    "epochs": ("--epochs", "passes over the images"),
    "batch_size": ("--batch-size", "examples per device per step"),
    "gradient_accumulation_steps": ("--gradient-accumulation-steps", "micro-batches per optimizer step"),
    "learning_rate": ("--lr", "peak learning rate (cosine schedule)"),
    "lora_rank": ("--lora-rank", "LoRA rank"),
    "lora_alpha": ("--lora-alpha", "LoRA alpha"),
    "target_modules": ("--target-modules", "comma list of the linear layers that get LoRA matrices"),
    "precision": ("--precision", "bf16 autocast or float32; auto: bf16 on CUDA, float32 on a CPU"),
    "seed": ("--seed", "seed of the image subset, the LoRA initialisation and the data order"),
    "save_steps": ("--save-steps", "checkpoint every N optimizer steps"),
}


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :data:`TRAIN_FLAGS` field, its type and default taken from ``AdapterTrainingConfig``."""
    import dataclasses

    from .training import PRECISIONS, AdapterTrainingConfig

    defaults = {f.name: f.default for f in dataclasses.fields(AdapterTrainingConfig)}
    for name, (flag, text) in TRAIN_FLAGS.items():
        default = defaults[name]
        kind = {tuple: _comma_list, type(None): int}.get(type(default), type(default))
        shown = ",".join(default) if isinstance(default, tuple) else default
        extra = {"choices": PRECISIONS} if name == "precision" else {}
        parser.add_argument(flag, dest=name, type=kind, default=default,
                            help=text + ("" if default is None else f" (default: {shown})"), **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a LoRA adapter (transformers.Trainer + peft)")
    train.add_argument("--data", nargs="+", required=True, help="lqae-tokenize JSONL files or datasets folders")
    train.add_argument("--output", required=True, help="run folder: checkpoints/ and final/ (the ImageLM)")
    train.add_argument("--label-names", help="JSON object/file or RAW=NAME,... renaming raw labels")
    _add_training_flags(train)
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    train.add_argument("--no-progress-bar", action="store_true")

    labels = sub.add_parser("labels", help="print an ImageLM's labels (one per line) and what it was trained to do")
    labels.add_argument("model", help=f"ImageLM folder, Hub id or bundled name ({', '.join(names(IMAGE_LM))})")

    evaluate = sub.add_parser("evaluate", help="reading accuracy on labelled image text")
    evaluate.add_argument("--model", required=True, help="ImageLM folder or bundled name")
    evaluate.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="the LM's arithmetic: auto (bf16 autocast on CUDA, float32 on a CPU), fp32, bf16")
    evaluate.add_argument("--data", nargs="+", required=True, help="lqae-tokenize JSONL files or datasets folders")
    evaluate.add_argument("--label-names", help="as for train")
    evaluate.add_argument("--limit", type=int, help="the first N >= 1 records after a seeded shuffle (seed 0)")
    evaluate.add_argument("--json", type=Path, help="also write the numbers here")

    classify = sub.add_parser("classify", help="print the likeliest label of each image")
    classify.add_argument("--model", required=True, help="ImageLM folder or bundled name")
    classify.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="the LM's arithmetic: auto (bf16 autocast on CUDA, float32 on a CPU), fp32, bf16")
    classify.add_argument("images", nargs="+", help="image files")

    draw = sub.add_parser("draw", help="draw a named class to a PNG")
    draw.add_argument("--model", required=True, help="ImageLM folder or bundled name")
    draw.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="the LM's arithmetic: auto (bf16 autocast on CUDA, float32 on a CPU), fp32, bf16")
    draw.add_argument("--label", required=True, help="the class to draw")
    draw.add_argument("--n", type=int, default=1, help=f"how many drawings, 1-{MAX_DRAWINGS} (side by side in one PNG)")
    draw.add_argument("--seed", type=int, default=0)
    draw.add_argument("--temperature", type=float, default=1.0)
    draw.add_argument("--guidance", type=float, default=1.0,
                      help="label guidance scale: 1 none, >1 pulls towards --label (costs one LM pass per label)")
    draw.add_argument("--candidates", type=int, default=1,
                      help="sample this many per drawing and keep the one the model reads as --label most surely "
                           "(costs that many times the drawing time; 1: plain samples)")
    draw.add_argument("--reader", help="rank the candidates by this ImageLM's reading instead of --model's "
                                       "(folder or bundled name; for a draw-only --model)")
    draw.add_argument("--scale", type=int, default=4, help=f"enlarge each drawing this many times (1-{MAX_SCALE})")
    draw.add_argument("--output", required=True, type=Path, help="PNG file to write")
    return parser


def _check_output(path: Path | None, flag: str) -> None:
    """An output file that cannot be written is a usage error before anything loads."""
    from ..cli.common import check_output_file

    check_output_file(path, flag)


def _train(args: argparse.Namespace) -> int:
    from .training import TrainingSetupError, train_adapter

    try:
        config = _training_config(args)
    except ValueError as err:  # a bad setting, said before anything loads
        raise UsageError(str(err)) from None
    try:
        final = train_adapter(config)
    except TrainingSetupError as err:  # unusable data or a --resume with other settings, before the LM loads
        raise UsageError(str(err)) from None
    print(f"{PROG}: ImageLM written to {final}")
    return 0


def _training_config(args: argparse.Namespace):
    from .training import AdapterTrainingConfig

    return AdapterTrainingConfig(
        data=args.data, output_dir=args.output, label_names=parse_label_names(args.label_names),
        resume=args.resume, progress_bar=not args.no_progress_bar, **{name: getattr(args, name) for name in TRAIN_FLAGS})


def _model_config(flag: str, name: str, task: str | None = None) -> dict:
    """``image_lm.json`` of the ImageLM ``name`` (checked, before any model loads); a usage error naming
    the bundled ImageLMs when it is not one, or when it was trained without ``task``."""
    from .folder import read_image_lm_config, resolve_image_lm

    try:
        config = read_image_lm_config(resolve_image_lm(name))
    except (CheckpointError, TypeError) as err:
        raise UsageError(f"{flag} {name}: {err}") from None
    tasks = config.get("training", {}).get("tasks", ["read", "draw"])
    if task is not None and task not in tasks:
        raise UsageError(f"{flag} {name} was trained to {' and '.join(tasks)} only, not to {task}: {TASK_ADVICE[task]}")
    return config


def _load(name: str, precision: str = "auto"):
    from .image_lm import ImageLM

    try:
        return ImageLM.from_pretrained(name, precision=precision)
    except CheckpointError as err:  # found only once loading (e.g. a pin): still one line
        raise UsageError(f"--model {name}: {err}") from None


def _labels(args: argparse.Namespace) -> int:
    config = _model_config("model", args.model)
    print("\n".join(config["labels"]))
    tasks = config.get("training", {}).get("tasks", ["read", "draw"])
    print(f"{PROG}: {len(config['labels'])} labels; trained to {' and '.join(tasks)}", file=sys.stderr)
    return 0


def _check_images(paths: Sequence[str]) -> None:
    """Every path an image Pillow can decode, before the model loads (a usage error naming the first bad one)."""
    from ..images import InvalidImageError, to_tensor

    for path in paths:
        if Path(path).is_dir():
            raise UsageError(f"{path} is a folder: give image files (e.g. {path}/*.png)")
        if not Path(path).is_file():
            raise UsageError(f"no such image file: {path}")
        try:
            to_tensor(path)
        except (InvalidImageError, OSError, ValueError, TypeError) as err:
            raise UsageError(f"{path} is not an image this package can read: {err}") from None


def _evaluate(args: argparse.Namespace) -> int:
    from .data import read_labelled_text
    from .evaluate import reading_accuracy
    from .training import select_images

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1 (leave it out to evaluate every record), got {args.limit}")
    _check_output(args.json, "--json")
    _model_config("--model", args.model, "read")
    items = select_images(read_labelled_text(args.data, parse_label_names(args.label_names)), args.limit, 0)
    image_lm = _load(args.model, args.precision)
    result = reading_accuracy(image_lm, items, progress=True)
    print(f"accuracy {result['accuracy']:.4f} +- {result['ci95']:.4f} (95% CI) on {result['n']} images, "
          f"{result['images_per_second']:.1f} images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _classify(args: argparse.Namespace) -> int:
    _model_config("--model", args.model, "read")
    _check_images(args.images)
    image_lm = _load(args.model, args.precision)
    for path, label in zip(args.images, image_lm.classify(list(args.images))):
        print(f"{path}: {label}")
    return 0


def _draw(args: argparse.Namespace) -> int:
    from ..imaging import image_row

    if args.output.suffix.lower() != ".png":
        raise UsageError(f"--output must be a .png file, got {args.output}")
    if not 1 <= args.n <= MAX_DRAWINGS or not 1 <= args.scale <= MAX_SCALE:
        raise UsageError(f"--n must be 1-{MAX_DRAWINGS} and --scale 1-{MAX_SCALE}, got {args.n} and {args.scale}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if not 1.0 <= args.guidance < float("inf"):
        raise UsageError(f"--guidance must be a number >= 1 (1: no guidance), got {args.guidance}")
    if args.candidates < 1:
        raise UsageError(f"--candidates must be at least 1 (1: plain samples), got {args.candidates}")
    if args.reader and args.candidates < 2:
        raise UsageError(f"--reader ranks candidates: give --candidates 2 or more (e.g. 8), got {args.candidates}")
    _check_output(args.output, "--output")
    config = _model_config("--model", args.model, "draw")
    if args.label not in config["labels"]:
        raise UsageError(f"unknown --label {args.label!r}; this model draws {config['labels']}")
    if args.reader:
        _check_reader(config, _model_config("--reader", args.reader, "read"), args.label)
    elif args.candidates > 1:
        _model_config("--model", args.model, "read")  # it ranks its own candidates
    image_lm = _load(args.model, args.precision)
    reader = _load(args.reader, args.precision) if args.reader else None
    try:  # only the settings' check: an error from deeper inside draw keeps its traceback
        image_lm.check_draw(args.label, args.n, temperature=args.temperature, candidates=args.candidates,
                            reader=reader)
    except ValueError as err:  # a reader of other words or labels, or a draw-only model asked to rank
        raise UsageError(str(err)) from None
    drawings = image_lm.draw(args.label, args.n, seed=args.seed, temperature=args.temperature,
                             guidance=args.guidance, candidates=args.candidates, reader=reader)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image_row(drawings, scale=args.scale).save(args.output)
    print(f"{PROG}: {args.n} drawing(s) of {args.label!r} written to {args.output}")
    return 0


def _check_reader(drawer: dict, reader: dict, label: str) -> None:
    """The reader reads the drawer's words (same image tokenizer and words per image) and knows ``label``."""
    ours = (drawer["image_tokenizer"], drawer.get("tokens_per_image"))
    theirs = (reader["image_tokenizer"], reader.get("tokens_per_image"))
    if ours != theirs:
        raise UsageError(f"--reader reads the words of {theirs[0]} ({theirs[1]} per image), --model draws those of "
                         f"{ours[0]} ({ours[1]} per image): pair adapters of the same image tokenizer")
    if label not in reader["labels"]:
        raise UsageError(f"--reader does not know the label {label!r}; it reads {reader['labels']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": _train, "evaluate": _evaluate, "classify": _classify, "draw": _draw, "labels": _labels}
    try:
        return commands[args.command](args)
    except UsageError as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
