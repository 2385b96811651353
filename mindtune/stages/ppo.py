"""PPO (InstructGPT step 3): the policy learns to raise a reward model's score while a KL penalty keeps it near
the starting (SFT) model.

Four roles over one frozen base wherever they share a base model (mindtune.models.roles): the actor (trained:
its adapter, or a private copy for full fine-tuning), the reference (the starting model, frozen), the critic
(a value head; by default the reward model's network and head, trained) and the reward model (frozen).

One iteration, run by the engine's data callback when an iteration's first micro-batch is asked for:
 1. sync the actor's weights into the KV-cache generator and sample one response per prompt (seeded by the seed
    and the iteration, so a resumed run draws the same samples);
 2. old log-probabilities and values from the training networks themselves (the generator's own
    log-probabilities are only compared, once, as a check), reference log-probabilities, and the score;
 3. per-token rewards -kl_coef * KL + score on the last response token; GAE; whitened advantages;
 4. `ppo.epochs` passes of shuffled mini-batches, each an engine step: clipped policy loss, clipped value loss,
    entropy bonus, optional PPO-ptx SFT loss.
Metrics are logged once per iteration (engine steps are aggregated by `log_row`).
"""
import dataclasses
import time

import numpy as np
from mindspore import nn, ops

from mindtune.engine import compile_cache
from mindtune.engine.buckets import gather_labels, plan_label_budgets
from mindtune.engine.graph import CompiledFunction
from mindtune.engine.losses import IGNORE, gathered_log_probs, labelled_log_probs
from mindtune.engine.trainer import Trainer, TrainTask
from mindtune.errors import ConfigError
from mindtune.models.causal_lm import output_projection
from mindtune.rlhf import advantages as adv
from mindtune.rlhf.losses import (clipped_policy_loss, clipped_value_loss, entropy_from_logits,
                                  masked_mean)
from mindtune.rlhf.rollout import batches, check_special_ids, reward_inputs, sample, turn_suffix
from mindtune.stages.common import check_inputs, prepare_run, print_summary, run_fingerprint, save_final

AUX = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "value_clip_fraction", "ptx_loss")
EVAL_SEED = 2**31 - 1    # held-out rollouts: one fixed seed, apart from every training iteration's
ROLLOUT_PEFT = ("none", "lora")   # the generator needs weights it can fold the adapter into


class PPOLoss(nn.Cell):
    """(input_ids [B, T], label_at [K], label_ids [K], old_logp, old_values, advantages, returns [B, T][, ptx_ids,
    ptx_label_at, ptx_label_ids]) -> (loss, AUX).

    The response tokens come as flat positions and targets (`mindtune.engine.buckets.gather_labels`): the actor's
    output projection, log-softmax and entropy run at those K positions only, not at the prompt's and padding's,
    and the log-probabilities are put back at their [B, T] places for the per-token maths."""

    def __init__(self, actor, critic, value_head, cfg):
        super().__init__(auto_prefix=False)
        self.actor, self.critic, self.value_head = actor, critic, value_head
        self.lm_head = output_projection(actor)
        self.inv_temperature = 1.0 / cfg.temperature
        self.cliprange, self.cliprange_value = cfg.cliprange, cfg.cliprange_value
        self.vf_coef, self.entropy_coef, self.ptx_coef = cfg.vf_coef, cfg.entropy_coef, cfg.ptx_coef

    def construct(self, input_ids, label_at, label_ids, old_logp, old_values, advantages, returns, ptx_ids=None,
                  ptx_label_at=None, ptx_label_ids=None):
        _, hidden = self.actor(input_ids)
        logits, logp, mask = gathered_log_probs(hidden, self.lm_head, label_at, label_ids, self.inv_temperature)
        per_token, clipped = clipped_policy_loss(logp, old_logp, advantages, mask, self.cliprange, self.cliprange)
        policy_loss = masked_mean(per_token, mask)
        _, hidden = self.critic(input_ids)
        values = self.value_head(hidden)
        value_tokens, value_clipped = clipped_value_loss(values, old_values, returns, mask, self.cliprange_value)
        value_loss = masked_mean(value_tokens, mask)
        entropy = masked_mean(entropy_from_logits(logits), (label_ids != IGNORE).astype(logits.dtype))
        if self.entropy_coef == 0:
            entropy = ops.stop_gradient(entropy)
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
        loss = policy_loss + self.vf_coef * value_loss - self.entropy_coef * entropy
        ptx_loss = ops.zeros((), policy_loss.dtype)
        if ptx_ids is not None:
            _, ptx_hidden = self.actor(ptx_ids)
            ptx_logp, ptx_mask = labelled_log_probs(ptx_hidden, self.lm_head, ptx_label_at, ptx_label_ids)
            ptx_loss = -ptx_logp.sum() / ops.maximum(ptx_mask.sum(), 1.0)
            loss = loss + self.ptx_coef * ptx_loss
        return loss, (policy_loss, value_loss, entropy, approx_kl, masked_mean(clipped, mask),
                      masked_mean(value_clipped, mask), ptx_loss)


def check(config):
    """Every PPO input that can be checked before anything is written; returns (config with model.path = the
    actor, checked inputs, reward-model info, encoded prompts). Raises one-line errors."""
    import os

    from mindtune.data.formats import read_rows
    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model
    from mindtune.models.roles import reward_model_info

    cfg = config.ppo
    actor = cfg.actor or config.model.path
    if cfg.actor is not None:
        if not os.path.exists(cfg.actor):
            raise ConfigError(f"ppo.actor: {cfg.actor} not found")
        actor = find_model_dir(cfg.actor)
        resolve_model(actor, key="ppo.actor")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=actor))
    if cfg.reward_model is None:
        raise ConfigError("ppo.reward_model: required (a reward-model run directory from stage: rm)")
    if config.peft.method not in ROLLOUT_PEFT:
        raise ConfigError(f"peft.method: {config.peft.method!r} is not supported by PPO; the rollout generator "
                          f"needs an adapter it can fold into the weights ({', '.join(ROLLOUT_PEFT)})")
    if config.parallel.model_parallel * config.parallel.pipeline_stage * config.parallel.context_parallel > 1:
        raise ConfigError("parallel: PPO runs data parallel only (each rank rolls out its own prompts); "
                          "set model_parallel, pipeline_stage and context_parallel to 1")
    per_step = config.train.batch_size * config.train.grad_accum
    if cfg.rollout_batch % per_step:
        raise ConfigError(f"ppo.rollout_batch: {cfg.rollout_batch} is not a multiple of train.batch_size x "
                          f"train.grad_accum = {per_step}")
    if cfg.ptx_coef > 0:
        if not cfg.ptx_data:
            raise ConfigError("ppo.ptx_data: required when ppo.ptx_coef > 0 (SFT rows for the PPO-ptx loss)")
        from mindtune.stages.sft import check_rows as check_sft_rows
        if not config.data.skip_bad_rows:    # a bad row stops before the run directory exists
            check_sft_rows(read_rows(cfg.ptx_data, "ppo.ptx_data", config.data.columns))
    checked = check_inputs(config)
    spec, tok = checked[1].spec, checked[1].tokenizer
    rm_resolved, stats = reward_model_info(cfg.reward_model, "ppo.reward_model")
    _same_vocabulary(checked[1], rm_resolved)
    check_special_ids(spec.pad_token_id, eos_ids(spec, tok), "model")
    from mindtune.data.loading import stage_sets
    prompts, held_out = stage_sets(config, tok, spec.pad_token_id, eval_limit=cfg.eval_prompts)
    held_out = list(held_out) if held_out is not None else None   # at most eval_prompts token lists
    return config, checked, (rm_resolved, stats), (prompts, held_out)


def _same_vocabulary(actor, reward):
    probe = "The reward model must read the actor's tokens: 0123 ,.!? <|im_end|>"
    a, r = actor.tokenizer, reward.tokenizer
    same = actor.spec.vocab_size == reward.spec.vocab_size and r is not None and \
        a.vocab_size == r.vocab_size and a.encode(probe) == r.encode(probe) and \
        actor.spec.pad_token_id == reward.spec.pad_token_id
    if not same:
        raise ConfigError(f"ppo.reward_model: {reward.source} has a different tokenizer or vocabulary than the "
                          f"actor {actor.source} (vocab {reward.spec.vocab_size} vs {actor.spec.vocab_size}); "
                          "train the reward model from the same base model")


def eos_ids(spec, tokenizer) -> list:
    return sorted({spec.eos_token_id} | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set()))


class Roles:
    """The four networks and the compiled forwards that score a rollout."""

    def __init__(self, run, rm, batch_size: int, seq_length: int):
        from mindtune.models.heads import RewardModel, ScoreHead
        from mindtune.models.roles import BasePool, disambiguate, policy_and_reference, scalar_model

        cfg, resolved = run.config, run.resolved
        rm_resolved, stats = rm
        tok, seed = resolved.tokenizer, cfg.seed
        # ppo.share_base false: every role loads its own copy of its base (to measure what sharing saves)
        self.pool = BasePool(run.profile, seq_length, batch_size, seed, cfg.parallel, share=cfg.ppo.share_base)
        self.actor, self.reference = policy_and_reference(self.pool, resolved, cfg.peft, tok, seed)
        reward_net, reward_head, _ = scalar_model(self.pool, rm_resolved, stats, tokenizer=tok, seed=seed)
        self.reward = RewardModel(reward_net, reward_head)
        if cfg.ppo.critic_init == "reward_model":
            self.critic, self.value_head, critic_params = scalar_model(
                self.pool, rm_resolved, stats, trainable_peft=cfg.peft, tokenizer=tok, seed=seed,
                head_name="value_head")
        else:
            critic, _ = policy_and_reference(self.pool, resolved, cfg.peft, tok, seed, with_reference=False)
            self.critic, self.value_head = critic.network, ScoreHead(resolved.spec.hidden_size, seed, "value_head")
            critic_params = list(critic.trainable) + [self.value_head.weight]
        for param in critic_params:       # the critic's own tensors, by name in checkpoints
            param.name = "critic." + param.name
        disambiguate(self.critic, self.actor.network, "critic.")   # actor and critic meet in the loss graph
        self.critic_params = critic_params
        self.stats = stats
        inv_t = 1.0 / cfg.ppo.temperature
        actor, reference, critic, value_head, reward = (self.actor.network, self.reference, self.critic,
                                                        self.value_head, self.reward)

        actor_head, reference_head = output_projection(actor), output_projection(reference)

        def actor_forward(input_ids, label_at, label_ids):
            _, hidden = actor(input_ids)
            logp = gathered_log_probs(hidden, actor_head, label_at, label_ids, inv_t)[1]
            _, hidden = critic(input_ids)
            return logp, value_head(hidden)

        def reference_forward(input_ids, label_at, label_ids):
            _, hidden = reference(input_ids)
            return gathered_log_probs(hidden, reference_head, label_at, label_ids, inv_t)[1]

        def reward_forward(input_ids, last_index):
            return reward(input_ids, last_index)

        cache = compile_cache.for_run(cfg, run.rank)
        self.actor_forward = CompiledFunction(actor_forward, [actor, critic, value_head], cache=cache,
                                              label="ppo.actor_forward")
        self.reference_forward = CompiledFunction(reference_forward, [reference], cache=cache,
                                                  label="ppo.reference_forward")
        self.reward_forward = CompiledFunction(reward_forward, [reward], cache=cache, label="ppo.reward_forward")

    def generation_weights(self) -> dict:
        """The actor's current full weights (the adapter folded in) for the generator."""
        from mindtune.models.build import get_weights

        if self.actor.merged_weights is not None:
            return self.actor.merged_weights()
        return get_weights(self.actor.network)


class RolloutBuffer:
    """Rolls out, scores and prepares one iteration's samples; serves them as the engine's micro-batches."""

    def __init__(self, run, roles, prompts, generator, batch_size: int, grad_accum: int, seq_length: int,
                 extra_state: dict, sum_over_ranks):
        from mindtune.generation import SamplingConfig

        cfg = run.config.ppo
        self.run, self.cfg, self.roles, self.prompts, self.generator = run, cfg, roles, prompts, generator
        self.batch_size, self.seq_length, self.seed = batch_size, seq_length, run.config.seed
        self.micro_per_iteration = cfg.epochs * cfg.rollout_batch // batch_size
        self.steps_per_iteration = self.micro_per_iteration // grad_accum
        self.sampler = run.sampler(prompts, batch_size=cfg.rollout_batch)
        # a response holds at most max_new_tokens labels: the loss's static number of positions a micro-batch
        self.label_budgets = plan_label_budgets([seq_length], [batch_size * cfg.max_new_tokens], batch_size)
        self.sampling = SamplingConfig(greedy=False, temperature=cfg.temperature, top_k=cfg.top_k,
                                       top_p=cfg.top_p).check()
        self.pad = run.resolved.spec.pad_token_id
        self.eos = eos_ids(run.resolved.spec, run.resolved.tokenizer)
        self.suffix = turn_suffix(run.resolved.tokenizer, self.eos)
        self.state = extra_state
        self.state.setdefault("kl_coef", cfg.kl_coef)
        self.sum_over_ranks = sum_over_ranks
        self.iteration, self.data, self.order, self.metrics = -1, None, None, {}
        self.began, self.steps = 0.0, []       # this iteration's start and its engine rows
        self.eval_seconds = 0.0
        self.ptx = None
        self.held_out = None

    # ---- one iteration ------------------------------------------------------------------------------------
    def roll_out(self, prompts, seed):
        """A scored rollout: (Rollout, dict of per-token arrays, seconds generating, seconds scoring)."""
        import mindspore as ms

        began = time.perf_counter()
        self.generator.update_weights(self.roles.generation_weights())
        rollout = sample(self.generator, prompts, self.sampling, self.cfg.max_new_tokens, seed, self.eos,
                         self.pad, self.seq_length)
        generated = time.perf_counter()
        n, b = len(prompts), self.batch_size
        logp = np.zeros((n, self.seq_length), np.float32)
        values, ref_logp, scores = np.zeros_like(logp), np.zeros_like(logp), np.zeros(n)
        reward_ids, reward_last = reward_inputs(rollout, self.suffix)
        for keep, idx in batches(n, b):
            gathered = [ms.Tensor(x) for x in gather_labels((rollout.input_ids[idx], rollout.labels[idx]),
                                                            self.label_budgets)]
            lp, v = self.roles.actor_forward(*gathered)
            k = len(keep)
            logp[keep], values[keep] = lp.asnumpy()[:k], v.asnumpy()[:k]
            ref_logp[keep] = self.roles.reference_forward(*gathered).asnumpy()[:k]
            scores[keep] = self.roles.reward_forward(ms.Tensor(reward_ids[idx]),
                                                     ms.Tensor(reward_last[idx])).asnumpy()[:k]
        arrays = {"logp": logp, "values": values, "ref_logp": ref_logp, "scores": scores}
        return rollout, arrays, generated - began, time.perf_counter() - generated

    def prepare(self, iteration: int):
        cfg, st = self.cfg, self.state
        began = time.perf_counter()
        if self.held_out and "initial_eval" not in st:
            # measured at the first iteration of a fresh run (after any resume: compiled graphs do not see weights
            # loaded into them later) and kept in the checkpoints
            st["initial_eval"] = self.evaluate(self.held_out)
        idx = self.sampler.indices(iteration)
        rollout, arr, t_gen, t_score = self.roll_out([self.prompts[i] for i in idx],
                                                     [self.seed, iteration, self.run.rank])
        mask = rollout.mask
        if "logprob_gap" not in st:   # generator vs training network, once per run
            st["logprob_gap"] = float(np.abs((rollout.gen_logprobs - arr["logp"]) * mask).max())
            if self.run.rank == 0:
                print(f"ppo: largest |generator - training network| log-probability difference "
                      f"{st['logprob_gap']:.2e}", flush=True)
        score = adv.normalise_scores(arr["scores"], self.roles.stats["reward_mean"],
                                     self.roles.stats["reward_std"], cfg.reward_clip)
        score = score - cfg.missing_eos_penalty * (~rollout.ended)
        kl = adv.kl_per_token(arr["logp"], arr["ref_logp"], cfg.kl_estimator) * mask
        kl_coef = st["kl_coef"]
        rewards = adv.token_rewards(score, kl, mask, kl_coef)
        advantages, returns = adv.gae(rewards, arr["values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = adv.whiten(advantages, mask)
        rows = len(idx)
        sequence_kl = self.sum_over_ranks(float(kl.sum())) / self.sum_over_ranks(float(rows))
        st["kl_coef"] = adv.KLController(kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon).update(
            sequence_kl, int(self.sum_over_ranks(float(rows))))
        f32 = np.float32
        self.data = (rollout.input_ids, rollout.labels, arr["logp"].astype(f32), arr["values"].astype(f32),
                     advantages.astype(f32), returns.astype(f32))
        rng = np.random.default_rng([self.seed, iteration, 1])
        self.order = np.concatenate([rng.permutation(rows) for _ in range(cfg.epochs)])
        lengths = rollout.response_lengths
        returns_sum = rewards.sum(1)
        mean = self._global_mean
        self.metrics = {   # over the global batch: every rank's rollouts
            "iteration": iteration + 1,
            "reward": mean(returns_sum), "reward_std": self._global_std(returns_sum),
            "score": mean(arr["scores"]), "score_std": self._global_std(arr["scores"]),
            "score_normalised": mean(score), "kl": sequence_kl, "kl_coef": kl_coef,
            "response_length": mean(lengths), "eos_fraction": mean(rollout.ended),
            "explained_variance": _explained_variance(arr["values"], returns, mask),
            "seconds_generating": t_gen, "seconds_scoring": t_score,
        }
        self.began = began
        self.iteration = iteration

    def _global_mean(self, values) -> float:
        values = np.asarray(values, np.float64)
        return self.sum_over_ranks(float(values.sum())) / self.sum_over_ranks(float(values.size))

    def _global_std(self, values) -> float:
        values = np.asarray(values, np.float64)
        mean = self._global_mean(values)
        return float(np.sqrt(max(self._global_mean((values - mean) ** 2), 0.0)))

    def train_batch(self, k: int):
        iteration, micro = divmod(k, self.micro_per_iteration)
        if iteration != self.iteration:
            self.prepare(iteration)
        rows = self.order[micro * self.batch_size:(micro + 1) * self.batch_size]
        batch = gather_labels(tuple(a[rows] for a in self.data), self.label_budgets)
        if self.ptx is not None:
            batch += self.ptx(k)
        return batch

    # ---- metrics: one row per iteration -------------------------------------------------------------------
    def log_row(self, step: int, row: dict):
        self.steps.append(row)
        if (step + 1) % self.steps_per_iteration:
            return None
        steps, self.steps = self.steps, []
        out = {"step": step + 1, **self.metrics}
        for key in ("loss", "grad_norm", "lr", "tokens_per_s") + AUX:
            values = [s[key] for s in steps if s.get(key) is not None]
            out[key] = float(np.mean(values)) if values else None
        out["seconds_evaluating"], self.eval_seconds = self.eval_seconds, 0.0
        out["seconds_training"] = time.perf_counter() - self.began - out["seconds_generating"] - \
            out["seconds_scoring"] - out["seconds_evaluating"]
        out.update({k: v for k, v in steps[-1].items() if k.startswith("eval_")})
        return out

    # ---- held-out reward ----------------------------------------------------------------------------------
    def evaluate(self, prompts) -> dict:
        began = time.perf_counter()
        rollout, arr, _, _ = self.roll_out(prompts, [self.seed, EVAL_SEED])
        self.eval_seconds += time.perf_counter() - began
        kl = adv.kl_per_token(arr["logp"], arr["ref_logp"], "k1") * rollout.mask
        score = adv.normalise_scores(arr["scores"], self.roles.stats["reward_mean"],
                                     self.roles.stats["reward_std"], 0.0)
        return {"eval_score": float(arr["scores"].mean()), "eval_score_normalised": float(score.mean()),
                "eval_kl": float(kl.sum(1).mean()), "eval_response_length": float(rollout.response_lengths.mean())}


def _explained_variance(values, returns, mask) -> float:
    m = mask > 0
    if m.sum() < 2:
        return float("nan")
    var = np.var(returns[m])
    return float(1.0 - np.var(returns[m] - values[m]) / var) if var > 0 else float("nan")


def run(config) -> dict:
    from mindtune.generation import Generator
    from mindtune.peft import count_parameters

    config, checked, rm, (prompts, held_out) = check(config)
    cfg, ppo = config, config.ppo
    run = prepare_run(config, checked)
    suffix = turn_suffix(run.resolved.tokenizer, eos_ids(run.resolved.spec, run.resolved.tokenizer))
    b, seq_length = cfg.train.batch_size, cfg.data.max_length + ppo.max_new_tokens + len(suffix)
    roles = Roles(run, rm, b, seq_length)
    trainable = list(roles.actor.trainable) + roles.critic_params
    n_train, n_total = count_parameters(roles.actor)
    if run.rank == 0:
        print(f"ppo: {len(prompts)} prompts, {ppo.iterations} iterations of {ppo.rollout_batch} rollouts x "
              f"{ppo.epochs} epochs, peft={cfg.peft.method}, actor trainable {n_train:,} / {n_total:,}, critic "
              f"trainable {sum(p.size for p in roles.critic_params):,}; base copies loaded: {roles.pool.copies}",
              flush=True)
    generator = Generator(run.resolved.spec, roles.generation_weights(), run.profile,
                          batch_size=min(ppo.rollout_batch, 16))
    trainer_ref = {}
    state = {}
    buffer = RolloutBuffer(run, roles, prompts, generator, b, cfg.train.grad_accum, seq_length, state,
                           lambda v: trainer_ref["trainer"].sum_over_ranks(v))
    if ppo.ptx_coef > 0:
        buffer.ptx = _ptx_batches(cfg, run, seq_length, b)
    if run.rank == 0:
        print(f"ppo: the loss reads the actor's logits at no more than {buffer.label_budgets[seq_length]} of "
              f"{b * seq_length} positions a batch (the response tokens)", flush=True)
    steps = buffer.steps_per_iteration
    # the engine counts optimizer steps: an iteration is `steps` of them; saves and evaluations fall on iterations
    train = dataclasses.replace(cfg.train, max_steps=ppo.iterations * steps, eval_every=ppo.eval_every * steps,
                                save_every=cfg.train.save_every * steps, log_every=steps)
    engine_config = dataclasses.replace(cfg, train=train)
    buffer.held_out = held_out
    task = TrainTask(loss_cell=PPOLoss(roles.actor.network, roles.critic, roles.value_head, ppo), aux_names=AUX,
                     trainable=trainable, train_batch=buffer.train_batch,
                     tokens_in=lambda batch: int((batch[0] != run.resolved.spec.pad_token_id).sum()),
                     loss_tokens=lambda batch: int((batch[2] != IGNORE).sum()),
                     extra_state=state, log_row=buffer.log_row,
                     eval_extra=(lambda: buffer.evaluate(held_out)) if held_out else None,
                     fingerprint=run_fingerprint(cfg))
    trainer = Trainer(engine_config, run.run_dir, task, run.profile, desc="ppo", run=run)
    trainer_ref["trainer"] = trainer
    summary = trainer.fit()
    if run.rank == 0:
        save_final(run, roles.actor, meta={"ppo": {"reward_model": ppo.reward_model}})
    last, initial = summary.get("last", {}), state.get("initial_eval")
    extra = f"ppo: KL to the reference {last.get('kl', float('nan')):.4f}, kl_coef {state.get('kl_coef'):.4g}"
    if initial and "eval_score" in last:
        extra = (f"ppo: held-out reward-model score {initial['eval_score']:.4f} (before) -> {last['eval_score']:.4f}"
                 f" (after), KL to the reference {last['eval_kl']:.4f}")
        summary["initial_eval"] = initial
    print_summary(run, summary, extra=extra)
    return summary


def _ptx_batches(cfg, run, seq_length: int, batch_size: int):
    """PPO-ptx: micro-batch k of the SFT rows in ppo.ptx_data, at the rollout's sequence length, its labels
    gathered (ids, label_at, label_ids) to a budget of batch_size x the most labels of any row."""
    from mindtune.data.loading import open_set
    from mindtune.data.sources import parse_sources

    rows = open_set("sft", parse_sources(cfg.ppo.ptx_data, "ppo.ptx_data", cfg.data.columns), run.resolved.tokenizer,
                    run.resolved.spec.pad_token_id, seq_length, cfg.data, train_on_prompt=False)
    sampler = run.sampler(rows, batch_size=batch_size, seed=cfg.seed + 1, group_by_length=False)
    budgets = plan_label_budgets([seq_length], [batch_size * int(rows.label_counts.max(initial=0))], batch_size)
    return lambda k: gather_labels(rows.batch(sampler.indices(k)), budgets)


def check_rows(rows):
    """Row-format check for `mindtune validate`: every row must be a prompt row (raises with file:line)."""
    from mindtune.data.formats import _text, check_messages
    from mindtune.errors import DataError

    for where, row in rows:
        if "messages" in row:
            check_messages(row["messages"], where)
        elif "prompt" in row:
            _text(row, "prompt", where)
        else:
            raise DataError(f"{where}: expected a 'prompt' or 'messages' field")
