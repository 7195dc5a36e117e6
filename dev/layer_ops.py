"""Time each step of one all-MiniLM-L6-v2 encoder layer in inference: numpy-bert beside torch.

bench.py compares whole forward passes. This script splits one layer (hidden 384,
12 heads, intermediate 1536, batch 32 x 128, random inputs, no gradients) into the steps
that both sides run, to show where the time of the two sides differs:

    QKV linear, attention (scores, softmax, times V), output linear, Add & Norm,
    intermediate linear, GELU, output linear, Add & Norm, and the whole layer.

Ours runs first: BLAS on one thread, autograd's threads as train.py and infer.py set
them. torch runs second, in the same process, with torch.set_num_threads(N). Each time
is the median of --runs calls after three warm-up calls.

Run from anywhere (NumPy, torch and transformers; a dev check, never run by the tests):

    python dev/layer_ops.py [--threads N] [--runs N]

Limitations: random weights and inputs; one shape only; the two sides share the
process, so torch's libraries are loaded while ours runs (they stay idle).
"""

import os

# As train.py and infer.py do: BLAS on one thread, autograd splits the work.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autograd  # noqa: E402
import layers  # noqa: E402
from bench import time_runs  # noqa: E402

B, T, C, H, INTERMEDIATE = 32, 128, 384, 12, 1536
STEPS = ("QKV linear", "attention", "output linear", "Add & Norm", "intermediate linear",
         "GELU", "FFN output linear", "Add & Norm (FFN)")


def median_ms(fn, runs: int) -> float:
    """Return the median milliseconds of `runs` calls of fn, after three warm-up calls."""
    return 1000 * statistics.median(time_runs(fn, 3, runs))


def time_ours(runs: int) -> dict:
    rng = np.random.default_rng(0)
    layer = layers.EncoderLayer(C, H, INTERMEDIATE, 0.1, 0.1, 1e-12, rng).eval()
    attention, ffn = layer.attention, layer.feed_forward
    x, qkv, context, hidden = (autograd.Tensor(rng.standard_normal(shape).astype(np.float32))
                               for shape in ((B, T, C), (B, T, 3 * C), (B, T, C),
                                             (B, T, INTERMEDIATE)))
    with autograd.no_grad():
        weight = autograd.concatenate([attention.self_attention.query.weight,
                                       attention.self_attention.key.weight,
                                       attention.self_attention.value.weight], axis=1)
        bias = autograd.concatenate([attention.self_attention.query.bias,
                                     attention.self_attention.key.bias,
                                     attention.self_attention.value.bias], axis=0)
        steps = {
            "QKV linear": lambda: autograd.linear(x, weight, bias),
            "attention": lambda: autograd.attention(qkv, H, return_probs=False),
            "output linear": lambda: attention.output(context),
            "Add & Norm": lambda: attention.norm(context, residual=x),
            "intermediate linear": lambda: ffn.intermediate(x),
            "GELU": lambda: autograd.gelu(hidden),
            "FFN output linear": lambda: ffn.output(hidden),
            "Add & Norm (FFN)": lambda: ffn.norm(x, residual=x),
            "whole layer": lambda: layer(x, None, return_probs=False),
        }
        return {name: median_ms(fn, runs) for name, fn in steps.items()}


def time_torch(threads: int, runs: int) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers.models.bert.modeling_bert import BertLayer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=C, num_attention_heads=H,
                                     intermediate_size=INTERMEDIATE)
    config._attn_implementation = "sdpa"  # as BertModel.from_pretrained picks on CPU
    layer = BertLayer(config).eval()
    attention = layer.attention
    x = torch.randn(B, T, C)
    qkv = torch.randn(B, T, 3 * C)
    hidden = torch.randn(B, T, INTERMEDIATE)
    weight = torch.cat([attention.self.query.weight, attention.self.key.weight,
                        attention.self.value.weight])
    bias = torch.cat([attention.self.query.bias, attention.self.key.bias,
                      attention.self.value.bias])

    def sdpa():
        q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)

    with torch.no_grad():
        steps = {
            "QKV linear": lambda: F.linear(x, weight, bias),
            "attention": sdpa,
            "output linear": lambda: attention.output.dense(x),
            "Add & Norm": lambda: attention.output.LayerNorm(x + x),
            "intermediate linear": lambda: layer.intermediate.dense(x),
            "GELU": lambda: F.gelu(hidden),
            "FFN output linear": lambda: layer.output.dense(hidden),
            "Add & Norm (FFN)": lambda: layer.output.LayerNorm(x + x),
            "whole layer": lambda: layer(x),
        }
        return {name: median_ms(fn, runs) for name, fn in steps.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=autograd.thread_count({}),
                        help="threads on both sides (default: all cores)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per step")
    args = parser.parse_args()
    if args.threads < 1 or args.runs < 1:
        parser.error(f"--threads {args.threads} and --runs {args.runs} must be 1 or more")
    autograd.set_num_threads(args.threads)
    autograd.reuse_freed_memory()  # as infer.py does
    ours = time_ours(args.runs)
    reference = time_torch(args.threads, args.runs)
    print(f"one MiniLM-shaped layer, batch {B} x {T}, {args.threads} thread(s), no gradients")
    print(f"  {'step':22s} {'ours ms':>8s} {'torch ms':>9s} {'ours - torch':>13s}")
    for name in (*STEPS, "whole layer"):
        print(f"  {name:22s} {ours[name]:8.2f} {reference[name]:9.2f} "
              f"{ours[name] - reference[name]:13.2f}")
    products = [s for s in STEPS if "linear" in s]
    for label, names in (("the four linears", products),
                         ("everything else", [s for s in STEPS if s not in products])):
        mine, theirs = (sum(side[s] for s in names) for side in (ours, reference))
        print(f"  {label:22s} {mine:8.2f} {theirs:9.2f} {mine - theirs:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
