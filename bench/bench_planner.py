"""Planner vs published MindFormers Llama-2 runs on 910B: feasibility, memory, estimated vs published
throughput, and what the planner itself picks for the same model, devices and batch. Also times the search.

    python bench/bench_planner.py            # markdown table (pasted into docs/parallel.md)
"""
import time

from mindtune.models.spec import get_preset
from mindtune.parallel import GB, PlanRequest, Workload, get_hardware, search
from mindtune.parallel.cost import estimate_step_time
from mindtune.parallel.memory import estimate_memory
from mindtune.parallel.published import PUBLISHED
from mindtune.parallel.rules import check_strategy


def main():
    hw = get_hardware("910b")
    print("| Run (MindFormers config) | NPUs | Published strategy | Fits? est. GB/NPU of 59 | Published tokens/s/NPU "
          "| Estimated | Est./pub. | Planner's pick (same NPUs, global batch) | Pick est. tokens/s/NPU | Search time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in PUBLISHED:
        w = Workload(get_preset(run.preset), run.seq_length, peft=run.peft, lora_rank=run.lora_rank or 8,
                     lora_targets=run.lora_targets or ("wq", "wk", "wv", "wo"), param_dtype=run.param_dtype,
                     compute_dtype="bfloat16", flash_attention=True)
        s = run.strategy
        ok = not check_strategy(w.spec, s, devices=s.devices, hardware=hw, seq_length=w.seq_length)
        mem = estimate_memory(w, s, hw).total / GB
        est = s.global_batch * w.seq_length / estimate_step_time(w, s, hw).total / s.devices
        t0 = time.perf_counter()
        res = search(PlanRequest(w, hw, s.devices, global_batch=s.global_batch))
        dt = time.perf_counter() - t0
        best = res.plans[0] if res.plans else None
        pick = (f"{best.strategy.short()} {best.strategy.recompute}"
                f"{' sp' if best.strategy.seq_parallel else ''}{' os' if best.strategy.optimizer_shard else ''}"
                if best else "none fits")
        strat = (f"{s.short()} recompute {s.recompute}{', seq-par' if s.seq_parallel else ''}, "
                 f"{w.param_dtype} weights")
        print(f"| [{run.name}]({run.url}) | {s.devices} | {strat} | {'yes' if ok and mem <= hw.usable_gb else 'NO'} "
              f"{mem:.1f} | {run.tokens_per_second:.0f} | {est:.0f} | {est / run.tokens_per_second:.2f} | {pick} | "
              f"{best.tokens_per_second:.0f} | {dt * 1000:.0f} ms |" if best else "")


if __name__ == "__main__":
    main()
