"""PyTorch's side of `bench/diagnose_train.py --profile`: a transformers + PEFT training step of SmolLM2-135M's
architecture (random weights) under torch.profiler, op time per step by op type. Runs in REF_PYTHON's own
environment (never a mindtune dependency):

    /tmp/ref-venv/bin/python bench/ref_torch_profile.py --method lora --layers 30 --batch 4 --seq 256
"""
import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--method", choices=("lora", "full"), default="lora")
p.add_argument("--layers", type=int, default=30)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=a.layers,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                     rope_theta=100000.0, tie_word_embeddings=True)
model = LlamaForCausalLM(config)
if a.method == "lora":
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
ids = torch.randint(100, 40000, (a.batch, a.seq))


def step():
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


step()   # warm-up
began = time.perf_counter()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(a.steps):
        step()
seconds = (time.perf_counter() - began) / a.steps
events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
total = sum(e.self_cpu_time_total for e in events) / a.steps / 1e3
print(f"PyTorch, {a.method} {a.layers} layers {a.batch} x {a.seq}: {total:.0f} ms of op self-time a step "
      f"(step {seconds:.3f} s under the profiler)")
for e in events[:20]:
    ms = e.self_cpu_time_total / a.steps / 1e3
    print(f"  {e.key[:44]:<44} {ms:>8.1f} ms {100 * ms / total:5.1f}%  {e.count // a.steps:>5} calls")
