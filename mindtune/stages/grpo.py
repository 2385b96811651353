"""GRPO (DeepSeekMath): no critic. Several samples per prompt; each sample's advantage is its reward relative to
its group's; a clipped policy-gradient objective with a k3 KL penalty to the reference.

Roles over one frozen base (mindtune.models.roles): the policy (its adapter, or a private copy for full
fine-tuning), the reference (the starting model, frozen; not built when grpo.beta is 0) and any reward models
named in grpo.reward. One iteration, run by the engine's data callback when its first micro-batch is asked for:
 1. sync the policy into the KV-cache generator; sample grpo.num_generations responses for each of
    grpo.rollout_batch prompts (seeded by the seed and the iteration: a resumed run draws the same samples);
 2. old and reference log-probabilities from the training networks at the sampling temperature; rewards: rules on
    the decoded text (rlhf.rewards) and reward models on the tokens, weighted and summed;
 3. group-relative advantages (divided by the group's std, or not: Dr. GRPO);
 4. grpo.epochs passes of shuffled micro-batches, each an engine step of grpo_loss.
Metrics are logged once per iteration.
"""
import dataclasses
import time

import numpy as np
from mindspore import nn

from mindtune.engine import compile_cache
from mindtune.engine.buckets import gather_labels, plan_label_budgets
from mindtune.engine.graph import CompiledFunction
from mindtune.engine.losses import IGNORE, gathered_log_probs
from mindtune.engine.trainer import Trainer, TrainTask
from mindtune.errors import ConfigError
from mindtune.models.causal_lm import output_projection
from mindtune.rlhf import advantages as adv
from mindtune.rlhf.losses import grpo_loss
from mindtune.rlhf.rewards import build_rule, group_advantages, is_reward_model, reward_weights
from mindtune.rlhf.rollout import batches, check_special_ids, reward_inputs, sample, turn_suffix
from mindtune.stages.common import check_inputs, prepare_run, print_summary, run_fingerprint, save_final
from mindtune.stages.ppo import EVAL_SEED, ROLLOUT_PEFT, check_rows, eos_ids  # noqa: F401 - check_rows for validate

AUX = ("kl", "clip_fraction")


class GRPOLoss(nn.Cell):
    """(input_ids [B, T], label_at [K], label_ids [K], old_logp, ref_logp [B, T], advantages [B]) -> (loss, (kl,
    clip_fraction)). The response tokens come gathered (`mindtune.engine.buckets.gather_labels`): the output
    projection and log-softmax run at those K positions only, and their log-probabilities go back to [B, T]."""

    def __init__(self, policy, cfg):
        super().__init__(auto_prefix=False)
        self.policy, self.cfg = policy, cfg
        self.lm_head = output_projection(policy)
        self.inv_temperature = 1.0 / cfg.temperature

    def construct(self, input_ids, label_at, label_ids, old_logp, ref_logp, advantages):
        cfg = self.cfg
        _, hidden = self.policy(input_ids)
        _, logp, mask = gathered_log_probs(hidden, self.lm_head, label_at, label_ids, self.inv_temperature)
        loss, kl, clipped = grpo_loss(logp, old_logp, ref_logp, advantages, mask, cfg.epsilon, cfg.epsilon_high,
                                      cfg.beta, cfg.loss_type)
        return loss, (kl, clipped)


@dataclasses.dataclass
class Reward:
    name: str
    weight: float
    rule: object = None        # a rlhf.rewards.Rule, or
    model: tuple = None        # (ResolvedModel, stats) of a reward model, built later


def check(config):
    """Every GRPO input that can be checked before anything is written (also run by `mindtune validate`).
    Returns (config, checked inputs, rewards, (train rows, prompts), (eval rows, prompts) or None); raises
    one-line errors."""
    from mindtune.models.roles import reward_model_info

    cfg = config.grpo
    if config.peft.method not in ROLLOUT_PEFT:
        raise ConfigError(f"peft.method: {config.peft.method!r} is not supported by GRPO; the rollout generator "
                          f"needs an adapter it can fold into the weights ({', '.join(ROLLOUT_PEFT)})")
    if config.parallel.model_parallel * config.parallel.pipeline_stage * config.parallel.context_parallel > 1:
        raise ConfigError("parallel: GRPO runs data parallel only; set model_parallel, pipeline_stage and "
                          "context_parallel to 1")
    rows_per_iteration, per_step = cfg.rollout_batch * cfg.num_generations, \
        config.train.batch_size * config.train.grad_accum
    if rows_per_iteration % per_step:
        raise ConfigError(f"grpo.rollout_batch: {cfg.rollout_batch} prompts x {cfg.num_generations} generations = "
                          f"{rows_per_iteration} samples, not a multiple of train.batch_size x train.grad_accum = "
                          f"{per_step}")
    rewards = []
    for i, (spec, weight) in enumerate(zip(cfg.reward, reward_weights(cfg))):
        key = f"grpo.reward[{i}]"
        if is_reward_model(spec):
            rewards.append(Reward(spec, weight, model=reward_model_info(spec, key)))
        else:
            rewards.append(Reward(spec, weight, rule=build_rule(spec, cfg, key)))
    checked = check_inputs(config)
    spec, tok = checked[1].spec, checked[1].tokenizer
    check_special_ids(spec.pad_token_id, eos_ids(spec, tok), "model")
    for r in rewards:
        if r.model is not None and r.model[0].spec.vocab_size != spec.vocab_size:
            raise ConfigError(f"grpo.reward: the reward model {r.name} has another vocabulary than the policy")

    from mindtune.data.loading import stage_sets
    train, held_out = stage_sets(config, tok, spec.pad_token_id, eval_limit=cfg.eval_prompts)
    if held_out is not None:   # at most eval_prompts rows, held as lists
        held_out = ([held_out.rows[i] for i in range(len(held_out))], list(held_out))
    return config, checked, rewards, (train.rows, train), held_out


def prompt_of(row: dict) -> str:
    """The prompt text a rule sees: the prompt field, or the last user turn of a messages row."""
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    users = [m.get("content", "") for m in row.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


class Roles:
    """The policy, the reference (beta > 0) and the reward models, with the compiled forwards of a rollout."""

    def __init__(self, run, rewards, batch_size: int, seq_length: int):
        from mindtune.models.heads import RewardModel
        from mindtune.models.roles import BasePool, disambiguate, policy_and_reference, scalar_model

        cfg, resolved = run.config, run.resolved
        tok, seed = resolved.tokenizer, cfg.seed
        self.pool = BasePool(run.profile, seq_length, batch_size, seed, cfg.parallel)
        self.policy, self.reference = policy_and_reference(self.pool, resolved, cfg.peft, tok, seed,
                                                           with_reference=cfg.grpo.beta > 0)
        if self.reference is not None:
            disambiguate(self.reference, self.policy.network, "reference.")
        inv_t = 1.0 / cfg.grpo.temperature
        policy, reference = self.policy.network, self.reference

        def log_probs(network):
            """(input_ids, label_at, label_ids) -> log p [B, T] of the gathered response tokens under `network`."""
            head = output_projection(network)

            def forward(input_ids, label_at, label_ids):
                _, hidden = network(input_ids)
                return gathered_log_probs(hidden, head, label_at, label_ids, inv_t)[1]
            return forward

        cache = compile_cache.for_run(cfg, run.rank)
        self.policy_forward = CompiledFunction(log_probs(policy), [policy], cache=cache, label="grpo.policy_forward")
        self.reference_forward = None
        if reference is not None:
            self.reference_forward = CompiledFunction(log_probs(reference), [reference], cache=cache,
                                                      label="grpo.reference_forward")
        self.scorers = {}
        for r in rewards:
            if r.model is None:
                continue
            rm_resolved, stats = r.model
            net, head, _ = scalar_model(self.pool, rm_resolved, stats, tokenizer=tok, seed=seed)
            self.scorers[r.name] = (_reward_forward(RewardModel(net, head), cache, r.name), stats)

    def generation_weights(self) -> dict:
        from mindtune.models.build import get_weights

        if self.policy.merged_weights is not None:
            return self.policy.merged_weights()
        return get_weights(self.policy.network)


def _reward_forward(reward_model, cache, name: str):
    def forward(input_ids, last_index):
        return reward_model(input_ids, last_index)
    return CompiledFunction(forward, [reward_model], cache=cache, label=f"grpo.reward_forward.{name}")


class GroupRollouts:
    """Rolls out and scores one iteration's groups; serves them as the engine's micro-batches; logs per iteration."""

    def __init__(self, run, roles, rewards, train, generator, seq_length: int, extra_state: dict):
        from mindtune.generation import SamplingConfig

        cfg = run.config.grpo
        self.run, self.cfg, self.roles, self.rewards, self.generator = run, cfg, roles, rewards, generator
        self.rows, self.prompts = train
        self.batch_size, self.seq_length, self.seed = run.config.train.batch_size, seq_length, run.config.seed
        self.group = cfg.num_generations
        n = cfg.rollout_batch * self.group
        self.micro_per_iteration = cfg.epochs * n // self.batch_size
        self.steps_per_iteration = self.micro_per_iteration // run.config.train.grad_accum
        self.sampler = run.sampler(self.prompts, batch_size=cfg.rollout_batch)
        # a response holds at most max_new_tokens labels: the loss's static number of positions a micro-batch
        self.label_budgets = plan_label_budgets([seq_length], [self.batch_size * cfg.max_new_tokens],
                                                self.batch_size)
        self.sampling = SamplingConfig(greedy=False, temperature=cfg.temperature, top_k=cfg.top_k,
                                       top_p=cfg.top_p).check()
        tok = run.resolved.tokenizer
        self.tokenizer, self.pad = tok, run.resolved.spec.pad_token_id
        self.eos = eos_ids(run.resolved.spec, tok)
        self.suffix = turn_suffix(tok, self.eos)
        self.state = extra_state
        self.iteration, self.data, self.order, self.metrics, self._steps = -1, None, None, {}, []
        self.held_out = None

    # ---- scoring ------------------------------------------------------------------------------------------
    def score(self, rollout, rows) -> tuple:
        """(total reward [N], {reward name: [N]}) of a rollout whose row i answers rows[i] = (where, row)."""
        import mindspore as ms

        per = {}
        texts = [self.tokenizer.decode([t for t in r if t not in self.eos]) for r in rollout.responses]
        for reward in self.rewards:
            if reward.rule is not None:
                per[reward.name] = np.array([reward.rule(prompt_of(row), text, row, where)
                                             for (where, row), text in zip(rows, texts)])
                continue
            forward, stats = self.roles.scorers[reward.name]
            ids, last = reward_inputs(rollout, self.suffix)
            scores = np.zeros(len(texts))
            for keep, idx in batches(len(texts), self.batch_size):
                scores[keep] = forward(ms.Tensor(ids[idx]), ms.Tensor(last[idx])).asnumpy()[:len(keep)]
            per[reward.name] = adv.normalise_scores(scores, stats["reward_mean"], stats["reward_std"], 0.0)
        total = sum(r.weight * per[r.name] for r in self.rewards)
        return np.asarray(total, np.float64), per

    def roll_out(self, prompt_ids, seed):
        """(rollout, old log-probs, reference log-probs, seconds generating, seconds scoring)."""
        import mindspore as ms

        began = time.perf_counter()
        self.generator.update_weights(self.roles.generation_weights())
        rollout = sample(self.generator, prompt_ids, self.sampling, self.cfg.max_new_tokens, seed, self.eos,
                         self.pad, self.seq_length)
        generated = time.perf_counter()
        n = len(prompt_ids)
        logp = np.zeros((n, self.seq_length), np.float32)
        ref_logp = np.zeros_like(logp)
        for keep, idx in batches(n, self.batch_size):
            gathered = [ms.Tensor(x) for x in gather_labels((rollout.input_ids[idx], rollout.labels[idx]),
                                                            self.label_budgets)]
            logp[keep] = self.roles.policy_forward(*gathered).asnumpy()[:len(keep)]
            if self.roles.reference_forward is not None:
                ref_logp[keep] = self.roles.reference_forward(*gathered).asnumpy()[:len(keep)]
        return rollout, logp, ref_logp, generated - began, time.perf_counter() - generated

    # ---- one iteration ------------------------------------------------------------------------------------
    def prepare(self, iteration: int):
        cfg, g = self.cfg, self.group
        if self.held_out and "initial_eval" not in self.state:
            self.state["initial_eval"] = self.evaluate()   # before the first update of a fresh run
        idx = np.repeat(self.sampler.indices(iteration), g)        # each prompt g times, group by group
        rollout, logp, ref_logp, t_gen, t_fwd = self.roll_out([self.prompts[i] for i in idx], [self.seed, iteration])
        began = time.perf_counter()
        total, per = self.score(rollout, [self.rows[i] for i in idx])
        t_score = t_fwd + time.perf_counter() - began
        advantages, _ = group_advantages(total, g, cfg.scale_rewards)
        if cfg.beta == 0:
            ref_logp = logp.copy()     # no reference: the KL term is 0 (and not in the loss: beta is 0)
        mask = rollout.mask
        self.data = (rollout.input_ids, rollout.labels, logp, ref_logp.astype(np.float32),
                     advantages.astype(np.float32))
        rng = np.random.default_rng([self.seed, iteration, 1])
        self.order = np.concatenate([rng.permutation(len(idx)) for _ in range(cfg.epochs)])
        groups = total.reshape(-1, g)
        self.metrics = {
            "iteration": iteration + 1, "reward": float(total.mean()), "reward_std": float(total.std()),
            **{f"rewards/{name}": float(v.mean()) for name, v in per.items()},
            "equal_reward_groups": float(np.mean(groups.max(1) == groups.min(1))),
            "rollout_kl": adv.masked_mean(adv.kl_per_token(logp, ref_logp, "k3"), mask),
            "response_length": float(rollout.response_lengths.mean()),
            "eos_fraction": float(rollout.ended.mean()),
            "seconds_generating": t_gen, "seconds_scoring": t_score, "_began": time.perf_counter() - t_gen - t_score,
        }
        self.iteration = iteration

    def train_batch(self, k: int):
        iteration, micro = divmod(k, self.micro_per_iteration)
        if iteration != self.iteration:
            self.prepare(iteration)
        rows = self.order[micro * self.batch_size:(micro + 1) * self.batch_size]
        return gather_labels(tuple(a[rows] for a in self.data), self.label_budgets)

    def loss_tokens(self, batch) -> float:
        input_ids, label_at, label_ids = batch[:3]
        labelled = label_at[label_ids != IGNORE]
        if self.cfg.loss_type == "sequence":      # the responses with a label
            return float(np.unique(labelled // input_ids.shape[1]).size)
        return float(labelled.size)

    def log_row(self, step: int, row: dict):
        self._steps.append(row)
        if (step + 1) % self.steps_per_iteration:
            return None
        steps, self._steps = self._steps, []
        out = {"step": step + 1}
        out.update({k: v for k, v in self.metrics.items() if not k.startswith("_")})
        for key in ("loss", "grad_norm", "lr", "tokens_per_s") + AUX:
            values = [s[key] for s in steps if s.get(key) is not None]
            out[key] = float(np.mean(values)) if values else None
        out["seconds_training"] = time.perf_counter() - self.metrics["_began"] - out["seconds_generating"] - \
            out["seconds_scoring"]
        out.update({k: v for k, v in steps[-1].items() if k.startswith("eval_")})
        return out

    # ---- held-out reward: one sample per prompt with a fixed seed -----------------------------------------
    def evaluate(self) -> dict:
        rows, prompts = self.held_out
        rollout, logp, ref_logp, _, _ = self.roll_out(prompts, [self.seed, EVAL_SEED])
        total, per = self.score(rollout, rows)
        out = {"eval_reward": float(total.mean()), **{f"eval_rewards/{n}": float(v.mean()) for n, v in per.items()},
               "eval_response_length": float(rollout.response_lengths.mean())}
        if self.roles.reference_forward is not None:
            out["eval_kl"] = adv.masked_mean(adv.kl_per_token(logp, ref_logp, "k3"), rollout.mask)
        return out


def run(config) -> dict:
    from mindtune.generation import Generator
    from mindtune.peft import count_parameters

    config, checked, rewards, train, held_out = check(config)
    cfg, grpo = config, config.grpo
    run = prepare_run(config, checked)
    tok = run.resolved.tokenizer
    suffix = turn_suffix(tok, eos_ids(run.resolved.spec, tok))
    b, seq_length = cfg.train.batch_size, cfg.data.max_length + grpo.max_new_tokens + len(suffix)
    roles = Roles(run, rewards, b, seq_length)
    n_train, n_total = count_parameters(roles.policy)
    if run.rank == 0:
        print(f"grpo: {len(train[1])} prompts, {grpo.iterations} iterations of {grpo.rollout_batch} prompts x "
              f"{grpo.num_generations} samples x {grpo.epochs} epochs, rewards "
              f"{', '.join(f'{r.weight:g} x {r.name}' for r in rewards)}, peft={cfg.peft.method}, trainable "
              f"{n_train:,} / {n_total:,}; reference: {'none (beta 0)' if grpo.beta == 0 else 'the starting model'}"
              f"; base copies loaded: {roles.pool.copies}", flush=True)
    rows = grpo.rollout_batch * grpo.num_generations
    generator = Generator(run.resolved.spec, roles.generation_weights(), run.profile, batch_size=min(rows, 16))
    state = {}
    buffer = GroupRollouts(run, roles, rewards, train, generator, seq_length, state)
    buffer.held_out = held_out
    if run.rank == 0:
        print(f"grpo: the loss reads the policy's logits at no more than {buffer.label_budgets[seq_length]} of "
              f"{b * seq_length} positions a batch (the response tokens)", flush=True)
    steps = buffer.steps_per_iteration
    # the engine counts optimizer steps: an iteration is `steps` of them; saves and evaluations fall on iterations
    engine_train = dataclasses.replace(cfg.train, max_steps=grpo.iterations * steps,
                                       eval_every=grpo.eval_every * steps, save_every=cfg.train.save_every * steps,
                                       log_every=steps)
    task = TrainTask(loss_cell=GRPOLoss(roles.policy.network, grpo), aux_names=AUX,
                     trainable=list(roles.policy.trainable), train_batch=buffer.train_batch,
                     tokens_in=lambda batch: int((batch[0] != run.resolved.spec.pad_token_id).sum()),
                     loss_tokens=buffer.loss_tokens, extra_state=state, log_row=buffer.log_row,
                     eval_extra=buffer.evaluate if held_out else None, fingerprint=run_fingerprint(cfg))
    summary = Trainer(dataclasses.replace(cfg, train=engine_train), run.run_dir, task, run.profile, desc="grpo",
                      run=run).fit()
    last, initial = summary.get("last", {}), state.get("initial_eval")
    result = {}
    if initial and "eval_reward" in last:
        result = {"initial_eval_reward": initial["eval_reward"], "eval_reward": last["eval_reward"]}
        summary["initial_eval"] = initial
    if run.rank == 0:
        save_final(run, roles.policy, meta={"grpo": {"reward": list(grpo.reward), **result}})
    extra = f"grpo: reward {last.get('reward', float('nan')):.4f} at the last iteration"
    if result:
        extra = (f"grpo: held-out reward {result['initial_eval_reward']:.4f} (before) -> {result['eval_reward']:.4f} "
                 f"(after)" + (f", KL to the reference {last['eval_kl']:.4f}" if "eval_kl" in last else ""))
    print_summary(run, summary, extra=extra)
    return summary
