"""Tests for numpy-bert, in the order the files are read."""

import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parent


# ---------------------------------------------------------------- corpus


def test_corpus_has_documents():
    with gzip.open(ROOT / "wiki-vital-en.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    documents = [d for d in text.split("\n\n") if d.strip()]
    assert len(documents) > 9000
