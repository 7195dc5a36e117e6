"""Record torch's AdamW, gradient clipping and transformers' linear schedule for test_all.py.

    python testdata/make_train_reference.py   # writes testdata/train_reference.npz

Needs torch and transformers; the tests only read the .npz it writes.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

rng = np.random.default_rng(0)
weight = rng.standard_normal((3, 4)).astype(np.float32)
bias = rng.standard_normal(4).astype(np.float32)
grads = [(rng.standard_normal((3, 4)).astype(np.float32) * 3,
          rng.standard_normal(4).astype(np.float32) * 3) for _ in range(5)]

w = torch.nn.Parameter(torch.tensor(weight))
b = torch.nn.Parameter(torch.tensor(bias))
optimizer = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1},
                               {"params": [b], "weight_decay": 0.0}],
                              lr=0.01, betas=(0.9, 0.999), eps=1e-6)
schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=5)
lrs, norms = [], []
for gw, gb in grads:
    w.grad, b.grad = torch.tensor(gw), torch.tensor(gb)
    norms.append(float(torch.nn.utils.clip_grad_norm_([w, b], 1.0)))
    lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    schedule.step()

np.savez(Path(__file__).with_name("train_reference.npz"), weight=weight, bias=bias,
         grad_weight=np.stack([g[0] for g in grads]), grad_bias=np.stack([g[1] for g in grads]),
         lrs=np.array(lrs), norms=np.array(norms), final_weight=w.detach().numpy(),
         final_bias=b.detach().numpy())
print("lrs", lrs, "norms", norms)
