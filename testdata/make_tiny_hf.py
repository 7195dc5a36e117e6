"""Make the tiny Hugging Face BERT checkpoint and the reference outputs for the tests.

The model is a BERT with random weights: 2 layers, hidden size 12, 3 heads,
intermediate size 37 and a 120-token vocabulary. transformers saves it in its own
format, so the NumPy loader is checked against real files and real numbers instead of
our reading of the format. Every bias and LayerNorm parameter is perturbed away from
BERT's zero/one initialisation, so a dropped bias, a missing transpose or a swapped
axis changes the outputs.

Imports torch and transformers (reference only: no product file imports them).
Run from the repository root:

    python testdata/make_tiny_hf.py

Writes, replacing earlier versions:
    testdata/tiny_hf/          BertForPreTraining: config.json, model.safetensors,
                               vocab.txt, tokenizer_config.json
    testdata/tiny_hf_encoder/  the same encoder saved as BertModel (no heads and no
                               `bert.` prefix), with the same vocabulary files
    testdata/tiny_hf_outputs.npz  the batch and the outputs transformers computed for it
                               in eval mode, all float32 except the integer inputs:
        input_ids, token_type_ids, attention_mask   (B, T) int64
        tokens                (B, T) str, the WordPiece tokens ("" on padding)
        hidden_states         (L + 1, B, T, C), embeddings output then each layer
        attentions            (L, B, H, T, T), eager attention probabilities
        last_hidden_state     (B, T, C)
        pooler_output         (B, C)
        prediction_logits     (B, T, V), MLM logits at every position
        seq_relationship_logits  (B, 2), NSP logits (0 = "B follows A")
        mlm_labels            (B, T) int64, -100 except a few positions
        next_sentence_label   (B,) int64
        mlm_loss, nsp_loss, loss  scalars: transformers' cross-entropy on those labels,
                               loss = mlm_loss + nsp_loss as BertForPreTraining returns it

Shape legend: B batch (2), T sequence length (13), C hidden size (12), H heads (3),
L layers (2), V vocabulary (120).

Versions used: torch 2.13.0, transformers 5.25.0.

Limitations:
- The vocabulary covers only the handful of words in the fixture sentences plus single
  letters, so it is for shape and number checks, not a usable tokenizer.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForPreTraining, BertModel, BertTokenizer

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "tiny_hf"
ENCODER_DIR = HERE / "tiny_hf_encoder"
OUTPUTS = HERE / "tiny_hf_outputs.npz"

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = [".", ",", "!", "?", "'", "-"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
SUFFIXES = ["##ed", "##ing", "##ly", "##er", "##est"]
WORDS = (
    "the a an and of to in on at by with for from is was are be has had it he she "
    "they we you this that not cat dog sat ran mat sun day good big small red blue "
    "house tree book read city river water king queen man woman world year"
).split()

# Sentence pairs of the batch. The first fills T = 13 tokens; the second has 9 real
# tokens and 4 padding tokens. "cats" splits into "cat ##s".
PAIRS = [
    ("The cats sat on the mat", "a dog ran"),
    ("the sun is red", "we read"),
]
NEXT_SENTENCE_LABEL = [0, 1]
# (sequence, position) pairs that carry an MLM label; every other position is -100.
MLM_POSITIONS = [(0, 2), (0, 5), (0, 11), (1, 3), (1, 6)]


def build_vocab() -> list[str]:
    """Return the 120 vocabulary entries, specials first ([PAD] = 0)."""
    vocab = SPECIALS + PUNCTUATION + LETTERS + ["##" + c for c in LETTERS] + SUFFIXES
    vocab += [w for w in WORDS if w not in vocab]
    assert len(vocab) == len(set(vocab)), "duplicate vocabulary entry"
    assert len(vocab) == 120, f"vocabulary has {len(vocab)} entries, expected 120"
    return vocab


def write_vocab_files(directory: Path, vocab: list[str]) -> None:
    """Write vocab.txt and a tokenizer_config.json like the ones BERT checkpoints ship."""
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer_config = {
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "tokenizer_class": "BertTokenizer",
        "model_max_length": 32,
    }
    text = json.dumps(tokenizer_config, indent=2) + "\n"
    (directory / "tokenizer_config.json").write_text(text, encoding="utf-8")


def build_model(vocab_size: int) -> BertForPreTraining:
    """Build the tiny BertForPreTraining with seeded random, non-trivial weights."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=37,
        hidden_act="gelu",
        max_position_embeddings=32,
        type_vocab_size=2,
        # 0.35 instead of BERT's 0.02, so that every weight matters to the outputs
        # at float32 precision while the attention softmax stays far from one-hot.
        initializer_range=0.35,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    torch.manual_seed(1234)
    model = BertForPreTraining(config)

    # BERT initialises biases to 0 and LayerNorm weights to 1, which would hide a
    # missing bias or LayerNorm parameter. Perturb them all.
    generator = torch.Generator().manual_seed(5678)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "LayerNorm.weight" in name:
                parameter.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.3 * noise)
    return model


def save_directory(model, directory: Path, vocab: list[str]) -> None:
    """Save a model with its vocabulary files, replacing the directory only when complete."""
    temporary = Path(tempfile.mkdtemp(dir=directory.parent, prefix=directory.name + "."))
    model.save_pretrained(temporary)
    write_vocab_files(temporary, vocab)
    # mkdtemp and transformers 5.25's save_pretrained create owner-only files.
    os.chmod(temporary, 0o755)
    for file in temporary.iterdir():
        os.chmod(file, 0o644)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(temporary, directory)


def encode_batch(directory: Path) -> dict[str, np.ndarray]:
    """Tokenize the sentence pairs with transformers' BertTokenizer from the saved files."""
    tokenizer = BertTokenizer.from_pretrained(directory)
    encoded = tokenizer(
        [a for a, _ in PAIRS],
        [b for _, b in PAIRS],
        padding=True,
        return_tensors="np",
    )
    tokens = np.array(
        [
            [tokenizer.convert_ids_to_tokens(int(i)) if m else "" for i, m in zip(ids, mask)]
            for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
        ]
    )
    assert "[UNK]" not in tokens, f"a fixture word is missing from the vocabulary: {tokens}"
    return {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "token_type_ids": encoded["token_type_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
        "tokens": tokens,
    }


def main() -> None:
    torch.set_num_threads(1)
    vocab = build_vocab()
    save_directory(build_model(len(vocab)), MODEL_DIR, vocab)
    # Reload from disk, so the recorded outputs belong to the saved file.
    model = BertForPreTraining.from_pretrained(MODEL_DIR, attn_implementation="eager")
    model.eval()
    save_directory(model.bert, ENCODER_DIR, vocab)

    batch = encode_batch(MODEL_DIR)
    input_ids = torch.from_numpy(batch["input_ids"])
    token_type_ids = torch.from_numpy(batch["token_type_ids"])
    attention_mask = torch.from_numpy(batch["attention_mask"])
    assert input_ids.shape == (2, 13), f"batch shape {tuple(input_ids.shape)}, expected (2, 13)"
    assert int(attention_mask[1].sum()) == 9, "second sequence should have 9 real tokens"

    mlm_labels = torch.full_like(input_ids, -100)
    for row, position in MLM_POSITIONS:
        assert attention_mask[row, position] == 1, f"MLM label on padding at {row, position}"
        mlm_labels[row, position] = input_ids[row, position]
    next_sentence_label = torch.tensor(NEXT_SENTENCE_LABEL)

    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=mlm_labels,
            next_sentence_label=next_sentence_label,
            output_hidden_states=True,
            output_attentions=True,
        )
        encoder = BertModel.from_pretrained(ENCODER_DIR, attn_implementation="eager").eval()
        encoder_out = encoder(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        )
    # The same computation transformers does inside BertForPreTraining, split in two.
    vocab_size = len(vocab)
    mlm_loss = torch.nn.functional.cross_entropy(
        out.prediction_logits.view(-1, vocab_size), mlm_labels.view(-1), ignore_index=-100
    )
    nsp_loss = torch.nn.functional.cross_entropy(
        out.seq_relationship_logits.view(-1, 2), next_sentence_label.view(-1)
    )
    torch.testing.assert_close(mlm_loss + nsp_loss, out.loss)
    last_hidden_state = out.hidden_states[-1]
    torch.testing.assert_close(encoder_out.last_hidden_state, last_hidden_state)

    def as_float32(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float32)

    # BertForPreTrainingOutput has no pooled output, so take it from the encoder.
    arrays = dict(batch)
    arrays.update(
        hidden_states=np.stack([as_float32(h) for h in out.hidden_states]),
        attentions=np.stack([as_float32(a) for a in out.attentions]),
        last_hidden_state=as_float32(last_hidden_state),
        pooler_output=as_float32(encoder_out.pooler_output),
        prediction_logits=as_float32(out.prediction_logits),
        seq_relationship_logits=as_float32(out.seq_relationship_logits),
        mlm_labels=mlm_labels.numpy(),
        next_sentence_label=next_sentence_label.numpy(),
        mlm_loss=as_float32(mlm_loss),
        nsp_loss=as_float32(nsp_loss),
        loss=as_float32(out.loss),
    )
    with tempfile.NamedTemporaryFile(dir=HERE, suffix=".npz", delete=False) as f:
        np.savez_compressed(f, **arrays)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates owner-only files.
    os.replace(f.name, OUTPUTS)

    attentions = arrays["attentions"]
    print(f"max attention probability {attentions.max():.3f}")
    print(f"attention to padding (must be 0): {attentions[:, 1, :, :, 9:].max()}")
    print(f"mlm_loss {float(mlm_loss):.4f}  nsp_loss {float(nsp_loss):.4f}")
    for path in [MODEL_DIR, ENCODER_DIR, OUTPUTS]:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in files:
            print(f"{file.relative_to(HERE)}  {file.stat().st_size} bytes")


if __name__ == "__main__":
    main()
