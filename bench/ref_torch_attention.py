"""PyTorch's side of bench/diagnose_attention.py: explicit attention and scaled_dot_product_attention with
SmolLM2's heads (9 query, 3 key/value), forward + backward; prints one JSON line of ms a layer."""
import argparse
import json
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--layers", type=int, default=10)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
b, t, heads, kv_heads, dim = a.batch, a.seq, 9, 3, 64
q = torch.randn(b, heads, t, dim, requires_grad=True)
k, v = (torch.randn(b, kv_heads, t, dim, requires_grad=True) for _ in range(2))
mask = torch.triu(torch.full((t, t), -10000.0), 1)


def explicit(out):
    keys, values = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    for _ in range(a.layers):
        out = torch.softmax(out @ keys.transpose(-1, -2) * 0.125 + mask, -1) @ values
    return out.sum()


def sdpa(out):
    keys, values = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    for _ in range(a.layers):
        out = torch.nn.functional.scaled_dot_product_attention(out, keys, values, is_causal=True)
    return out.sum()


result = {}
for name, fn in (("PyTorch, explicit", explicit), ("PyTorch, scaled_dot_product_attention", sdpa)):
    fn(q).backward()   # warm-up
    times = []
    for _ in range(a.rounds):
        began = time.perf_counter()
        fn(q).backward()
        times.append(time.perf_counter() - began)
    result[name] = round(sorted(times)[len(times) // 2] / a.layers * 1e3, 2)
print(json.dumps(result))
