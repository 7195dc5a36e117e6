"""Record transformers' fill-mask pipeline output on the tiny checkpoint, for infer.py's tests.

infer.py prints the fields of transformers' fill-mask pipeline (score, token, token_str,
sequence), and its tests compare against what the pipeline itself returns for the same
texts on testdata/tiny_hf, instead of against our reading of the pipeline's code.

Imports torch and transformers (reference only: no product file imports them).
Run from the repository root:

    python testdata/make_fill_mask_reference.py

Writes testdata/fill_mask_reference.json, replacing an earlier version:
    {"model": "testdata/tiny_hf", "top_k": K, "transformers": version,
     "cases": [{"text": str, "result": [per [MASK]: [top-k {score, token, token_str,
     sequence}]]}]}
The pipeline returns a flat list for a text with one [MASK]; it is stored nested like the
others, so every case has one list per mask.

Versions used: torch 2.13.0, transformers 5.25.0.

Limitations:
- For a text with several [MASK]s the pipeline keeps [CLS] and [SEP] in "sequence"
  (infer.py drops them), so the tests compare those sequences without them.
"""

import json
import os
import tempfile
from pathlib import Path

import transformers
from transformers import pipeline

ROOT = Path(__file__).resolve().parent.parent
MODEL = "testdata/tiny_hf"
OUTPUT = ROOT / "testdata" / "fill_mask_reference.json"
TOP_K = 8

# Words from the 120-token vocabulary of testdata/tiny_hf, so nothing becomes [UNK].
TEXTS = [
    "the [MASK] sat on the mat.",
    "she read a [MASK] book by the river.",
    "a [MASK] and a [MASK] ran.",
    "[MASK] is good.",
    "the king, the queen and the [MASK]!",
    # "@" is not in the vocabulary: [UNK] is dropped from a one-mask sequence only.
    "the @ [MASK] sat.",
    "@ [MASK] and [MASK].",
]


def main() -> None:
    fill_mask = pipeline("fill-mask", model=str(ROOT / MODEL), top_k=TOP_K, device="cpu")
    cases = []
    for text in TEXTS:
        result = fill_mask(text)
        if result and isinstance(result[0], dict):
            result = [result]
        cases.append({"text": text, "result": result})
    data = {"model": MODEL, "top_k": TOP_K, "transformers": transformers.__version__,
            "cases": cases}

    fd, temporary = tempfile.mkstemp(dir=OUTPUT.parent, prefix=OUTPUT.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, OUTPUT)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
