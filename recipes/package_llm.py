"""Package a finished lqae-llm run as a bundled ImageLM (lqae_tokenizer/demo_models/<name>/, or --output).

    python recipes/package_llm.py RUN_DIR --name fashion-mnist-smollm2-read [--measured RESULTS_MD_SECTION]
    python recipes/package_llm.py RUN_DIR --name fashion-mnist-smollm2 --output DIR   # outside the package

Copies RUN_DIR/final (image_lm.json and the LoRA adapter), stores the adapter's weights as float16
(they load into the float32 model; half the bytes), and writes the card (README.md) from image_lm.json
(``lqae_tokenizer.llm.card``) with ``--measured`` (a Markdown file) as its "Measured" section.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("image_lm.json", "adapter_config.json", "adapter_model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True, help="the bundled name (the folder's name)")
    parser.add_argument("--output", type=Path, help="write here instead of lqae_tokenizer/demo_models/NAME")
    parser.add_argument("--measured", type=Path, help="Markdown appended to the card as its Measured section")
    args = parser.parse_args()
    from safetensors.torch import load_file, save_file

    from lqae_tokenizer.llm.card import build_card

    target = args.output or ROOT / "lqae_tokenizer" / "demo_models" / args.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(args.run / "final" / name, target / name)
    # peft records the base model's local folder; the portable name from image_lm.json replaces it.
    adapter_config = json.loads((target / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = json.loads((target / "image_lm.json").read_text())["language_model"]
    (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    weights = target / "adapter_model.safetensors"
    state = load_file(str(weights))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(weights),
              metadata={"format": "pt"})
    weights.chmod(0o644)
    measured = args.measured.read_text() if args.measured else None
    (target / "README.md").write_text(build_card(json.loads((target / "image_lm.json").read_text()), measured))
    total = sum(p.stat().st_size for p in target.iterdir())
    print(f"packaged {args.run / 'final'} into {target} ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
