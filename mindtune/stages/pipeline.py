"""`mindtune demo --pipeline`: the InstructGPT pipeline on the tiny model, SFT -> reward model -> PPO, each stage's
output feeding the next, from the data shipped in mindtune/assets.

The task: answer "Write a few words about X." with a few words. The SFT data says "capital" in about half of
the answers; the reward model learns to prefer answers with "capital"; PPO makes the policy say it more often
while the KL penalty keeps it near the SFT model. The three experiments are embedded (the installed package
needs no files beside it); run_configs/tiny/{sft_keyword_cpu,rm_cpu,ppo_lora_cpu}.yaml are the same
experiments as files (a test keeps them equal).
"""
import os

from mindtune.config import load_config

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")

SFT = {"stage": "sft", "seed": 0, "model": {"path": "tiny"},
       "data": {"train": "ppo_keyword_sft.jsonl", "max_length": 48},
       "train": {"batch_size": 16, "max_steps": 150, "lr": 3e-3, "warmup_steps": 10, "log_every": 10},
       "peft": {"method": "none"}}
RM = {"stage": "rm", "seed": 0, "model": {"path": "tiny"},
      "data": {"train": "rm_keyword_train.jsonl", "eval": "rm_keyword_eval.jsonl", "max_length": 64},
      "train": {"batch_size": 8, "max_steps": 150, "lr": 2e-3, "warmup_steps": 10, "log_every": 10,
                "eval_every": 50},
      "peft": {"method": "none"}, "rm": {"center_rewards_coef": 0.01}}
PPO = {"stage": "ppo", "seed": 0,
       "data": {"train": "ppo_keyword_prompts.jsonl", "eval": "ppo_keyword_prompts_eval.jsonl", "max_length": 40},
       "train": {"batch_size": 8, "lr": 2e-3, "schedule": "constant", "save_every": 5},
       "peft": {"method": "lora", "rank": 8, "alpha": 16, "target_modules": ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]},
       "ppo": {"iterations": 15, "rollout_batch": 16, "epochs": 2, "max_new_tokens": 12, "kl_coef": 0.05,
               "eval_every": 5}}


def _with_assets(experiment: dict) -> dict:
    data = dict(experiment["data"])
    for key in ("train", "eval"):
        if key in data:
            data[key] = os.path.join(ASSETS, data[key])
    return {**experiment, "data": data}


def run_demo_pipeline(output_dir: str, overrides: list) -> int:
    """Run the three stages into output_dir/{sft,rm,ppo}; `overrides` (key=value) apply to every stage."""
    from mindtune.stages import run_stage

    dirs = {name: os.path.join(output_dir, name) for name in ("sft", "rm", "ppo")}
    print(f"mindtune demo --pipeline: SFT -> reward model -> PPO on a tiny random Llama (CPU) -> {output_dir}",
          flush=True)
    results = {}
    for name, experiment, extra in (
            ("sft", SFT, []), ("rm", RM, []),
            ("ppo", PPO, [f"ppo.actor={dirs['sft']}", f"ppo.reward_model={dirs['rm']}"])):
        print(f"\n== {name} ==", flush=True)
        config = load_config(None, [f"output_dir={dirs[name]}", "train.resume=never"] + extra + list(overrides),
                             defaults=_with_assets(experiment))
        results[name] = run_stage(config)
    sft, rm, ppo = results["sft"], results["rm"], results["ppo"]
    initial, last = ppo.get("initial_eval", {}), ppo.get("last", {})
    print("\n== pipeline summary ==")
    print(f"SFT  loss {sft['first_loss']:.3f} -> {sft['last']['loss']:.3f}")
    print(f"RM   held-out accuracy {rm['reward_stats']['accuracy']:.3f} on {rm['reward_stats']['pairs']} pairs")
    if initial and "eval_score" in last:
        print(f"PPO  held-out reward-model score {initial['eval_score']:.3f} -> {last['eval_score']:.3f}, "
              f"final KL to the SFT model {last['eval_kl']:.3f}")
    print(f"     policy: {os.path.join(dirs['ppo'], 'model')} (mindtune generate --model ... accepts it)")
    return 0
