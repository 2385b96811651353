"""Reference for bench/bench_epoch.py: one epoch of LoRA SFT with Hugging Face transformers + PEFT (PyTorch CPU).

Runs in its own virtual environment (never a mindtune dependency; set-up in ../shared/bench/README.md):
    /tmp/ref-venv/bin/python bench/ref_torch_sft_epoch.py GGUF ROWS.npz --batch 8 --threads 2

ROWS.npz holds the token ids and pre-shifted labels that mindtune trains on (`ids`, `labels`: [rows, max_length],
right padded; `lengths`). The usual PyTorch recipe: a seeded shuffle, batches padded to their longest row
(dynamic padding, as DataCollatorForSeq2Seq does), AdamW. Prints one JSON line.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("gguf")
p.add_argument("rows")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
data = np.load(a.rows)
ids, labels, lengths = data["ids"], data["labels"], data["lengths"]
directory, name = os.path.split(a.gguf)
model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=a.lr)
model.train()
order = np.random.default_rng(a.seed).permutation(len(ids))
steps, padded, real, losses = [], 0, 0, []
for start in range(0, len(order), a.batch):
    rows = order[start:start + a.batch]
    width = int(lengths[rows].max())
    x = torch.from_numpy(ids[rows, :width].astype(np.int64))
    y = torch.from_numpy(labels[rows, :width].astype(np.int64))
    mask = torch.from_numpy((np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64))
    began = time.perf_counter()
    logits = model(input_ids=x, attention_mask=mask).logits.float()
    # mindtune's labels are already shifted (labels[t] is the target of position t): the same token mean
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    steps.append(time.perf_counter() - began)
    padded += x.numel()
    real += int(mask.sum())
    losses.append(round(loss.item(), 4))
print(json.dumps({"epoch_s": round(sum(steps), 2), "steps": len(steps), "padded_tokens": padded,
                  "real_tokens": real, "first_loss": losses[0], "last_losses": losses[-5:],
                  "mean_loss": round(float(np.mean(losses)), 4)}))
