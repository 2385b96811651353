"""The one training engine every stage uses.

A stage hands over a `TrainTask`: a loss cell (`loss, aux = cell(*batch)`), the parameters to train, and a
way to fetch micro-batch k of the (seeded, epoch-shuffled) data stream. The engine owns everything else:
graph-mode compilation, AdamW, lr schedule, gradient accumulation and clipping, dynamic loss scaling that skips
overflowed steps, evaluation, metrics, progress, atomic checkpoints and exact resume.
"""
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from mindtune.engine import checkpoint as ckpt
from mindtune.engine import compile_cache
from mindtune.engine.faults import maybe_kill
from mindtune.engine.metrics import MetricsLog, progress_bar
from mindtune.engine.schedule import learning_rate


@dataclass
class TrainTask:
    """What a stage gives the engine.

    loss_cell: `loss, aux = loss_cell(*batch)`; loss a scalar to minimise, aux a tuple of scalar metrics.
    aux_names: names of the aux metrics, logged as they are.
    trainable: parameters the optimizer updates; checkpoints hold exactly these (plus optimizer state).
    train_batch: micro-batch number k of the infinite training stream -> tuple of numpy arrays.
    eval_batches: () -> iterable of batches for evaluation, or None.
    tokens_in: batch -> number of real tokens (for tokens/s).
    loss_tokens: batch -> how many items the loss cell's loss is a mean over (its label tokens). The engine then
        weights each micro-batch (and, under data parallel, each rank) by its share of the step's total, so the
        step's loss and gradient are the sum over every token of the global batch divided by their number;
        None gives every micro-batch the same weight.
    no_decay: predicate on parameter names exempt from weight decay (norms, biases, embeddings by default).
    extra_state: the stage's own JSON state (e.g. PPO's KL coefficient): saved in every checkpoint and updated in
        place from the checkpoint on resume.
    log_row: (step, row) -> the row to log (extended with stage metrics), or None to log nothing at this step.
    eval_extra: () -> extra eval_* metrics computed at each evaluation (e.g. task metrics on generations).
    fingerprint: what decides the run's maths (config values, data file digests); saved in checkpoints, and a
        resume whose fingerprint differs is refused naming the keys (unless train.resume_changed is true).
    """
    loss_cell: object
    aux_names: Sequence[str]
    trainable: list
    train_batch: Callable[[int], tuple]
    eval_batches: Optional[Callable[[], Iterable[tuple]]] = None
    tokens_in: Callable[[tuple], int] = lambda batch: int(np.asarray(batch[0]).size)
    no_decay: Callable[[str], bool] = lambda name: name.endswith(("norm.weight", ".bias", "embedding_weight"))
    loss_tokens: Optional[Callable[[tuple], float]] = None
    extra_state: dict = field(default_factory=dict)
    log_row: Optional[Callable[[int, dict], Optional[dict]]] = None
    eval_extra: Optional[Callable[[], dict]] = None
    fingerprint: dict = field(default_factory=dict)


class Trainer:
    def __init__(self, config, run_dir: str, task: TrainTask, profile, desc: str = "train", run=None):
        """run: the stage's `Run` (rank, world size, parallel mode); None for a single process."""
        import mindspore as ms

        from mindtune.engine.optim import FusedAdamW

        self.ms = ms
        self.cfg = config.train
        self.run_dir = run_dir
        self.task = task
        self.desc = desc
        self.use_scaler = profile.needs_loss_scale
        self.rank = run.rank if run else 0
        # Data parallel averages gradients explicitly; semi-auto parallel inserts its own collectives.
        self.reduce_gradients = bool(run and run.parallel_mode == "data_parallel")
        self.world = run.world_size if self.reduce_gradients else 1
        params = list(task.trainable)
        decay = [p for p in params if not task.no_decay(p.name)]
        no_decay = [p for p in params if task.no_decay(p.name)]
        groups = [g for g in ({"params": decay, "weight_decay": self.cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        self.optimizer = FusedAdamW(groups, learning_rate=ms.Tensor(self.cfg.lr, ms.float32),
                                    betas=(self.cfg.adam_beta1, self.cfg.adam_beta2), eps=self.cfg.adam_eps)
        self.scaler = ms.amp.DynamicLossScaler(self.cfg.loss_scale if self.use_scaler else 1.0, 2,
                                               self.cfg.loss_scale_window)
        self.compile_cache = compile_cache.for_run(config, self.rank)
        self._compile()

    # -- compiled pieces -------------------------------------------------------------------------------------
    def _compile(self):
        from mindtune.engine.graph import CompiledFunction
        from mindtune.engine.optim import unscale_and_clip

        ms, ops = self.ms, self.ms.ops
        loss_cell, params, optimizer = self.task.loss_cell, self.optimizer.parameters, self.optimizer
        hyper = ops.HyperMap()
        # Under msrun data parallel, average gradients across ranks (a no-op on one device).
        reducer = ms.nn.DistributedGradReducer(params, mean=True) if self.reduce_gradients else None

        def scaled_loss(scale, batch):
            loss, aux = loss_cell(*batch)
            return loss * scale, loss, aux

        grad_fn = ms.value_and_grad(scaled_loss, None, params, has_aux=True)

        # Tensors inside a tuple argument are compile-time constants to a compiled call (a new graph per call):
        # batches go in as separate arguments, gradient tuples wrapped in ms.mutable.
        def forward_backward(scale, *batch):
            (_, loss, aux), grads = grad_fn(scale, batch)
            return loss, aux, grads

        def accumulate(total, grads):
            return hyper(ops.add, total, grads)

        clip = self.cfg.max_grad_norm > 0
        scaler = self.scaler if self.use_scaler else None

        # One graph per optimizer step after the gradients: reduce, unscale, check, clip, update and adjust the
        # loss scale, with the overflow skip decided inside the graph (the host reads `finite` only to log it).
        # The lr goes in as an argument and is assigned inside the graph: Parameter.set_data from the host
        # between calls was not always seen by the compiled optimizer (mindspore 2.9.0, CPU).
        def update(grads, inv_scale, max_norm, lr):
            if reducer is not None:
                grads = reducer(grads)
            grads, finite, norm = unscale_and_clip(grads, inv_scale, max_norm, clip, scaler is not None)
            if finite:
                ops.assign(optimizer.learning_rate, lr)
                optimizer(grads)
            if scaler is not None:
                scaler.adjust(finite)
            return finite, norm

        # Without gradient accumulation the whole optimizer step is one graph: forward, backward and update, as
        # MindSpore's TrainOneStepCell. The gradients never leave the graph, and the step is one launch (what sink
        # mode on Ascend needs); the result is the same as forward_backward followed by update.
        def train_step(scale, inv_scale, max_norm, lr, *batch):
            loss, aux, grads = forward_backward(scale, *batch)
            finite, norm = update(grads, inv_scale, max_norm, lr)
            return loss, aux, finite, norm

        def evaluate(*batch):
            return loss_cell(*batch)

        all_reduce = ops.AllReduce() if self.reduce_gradients else None

        @ms.jit
        def global_sum(values):
            return all_reduce(values)

        self._global_sum = global_sum if all_reduce is not None else None
        scaler_state = (self.scaler.scale_value, self.scaler.counter)
        cache = self.compile_cache
        self._forward_backward = CompiledFunction(forward_backward, [loss_cell], cache=cache, label="forward_backward")
        self._accumulate = CompiledFunction(accumulate, cache=cache, label="accumulate")
        self._update = CompiledFunction(update, [optimizer], scaler_state, cache=cache, label="update")
        self._train_step = CompiledFunction(train_step, [loss_cell, optimizer], scaler_state, cache=cache,
                                            label="train_step")
        self._evaluate = CompiledFunction(evaluate, [loss_cell], cache=cache, label="evaluate")

    def _tensors(self, batch):
        return tuple(self.ms.Tensor(np.asarray(x)) for x in batch)

    # -- state -----------------------------------------------------------------------------------------------
    def state_tensors(self) -> dict:
        tensors = {p.name: p.asnumpy() for p in self.task.trainable}
        trained = {id(p) for p in self.task.trainable}
        for p in self.optimizer.get_parameters():  # moments and step count; the lr comes from the schedule
            if id(p) not in trained and p.name != "learning_rate":
                tensors["optimizer/" + p.name] = p.asnumpy()
        tensors["scaler/scale_value"] = self.scaler.scale_value.asnumpy()
        tensors["scaler/counter"] = self.scaler.counter.asnumpy()
        return tensors

    def load_state_tensors(self, tensors: dict, where: str):
        from mindtune.errors import CheckpointError

        targets = {p.name: p for p in self.task.trainable}
        targets.update({"optimizer/" + p.name: p for p in self.optimizer.get_parameters()})
        targets.update({"scaler/scale_value": self.scaler.scale_value, "scaler/counter": self.scaler.counter})
        for name, value in tensors.items():
            if name not in targets:
                raise CheckpointError(f"{where}: tensor {name!r} does not belong to this run's model/optimizer")
            param = targets[name]
            if param.ndim == 0 and value.size == 1:  # safetensors stores scalars as shape (1,)
                value = value.reshape(())
            if tuple(param.shape) != tuple(value.shape):
                raise CheckpointError(f"{where}: tensor {name!r} has shape {value.shape}, expected {param.shape}")
            param.set_data(self.ms.Tensor(value, dtype=param.dtype))
        missing = [n for n in (p.name for p in self.task.trainable) if n not in tensors]
        if missing:
            raise CheckpointError(f"{where}: missing trainable tensor(s) {', '.join(missing[:3])}")

    def save(self, step: int, history: dict):
        state = {"step": step, "history": history, "stage_state": self.task.extra_state,
                 "fingerprint": self.task.fingerprint}
        return ckpt.save_checkpoint(self.run_dir, step, self.state_tensors(), state, self.cfg.save_total_limit)

    def _check_fingerprint(self, saved: dict, path: str):
        check_fingerprint(saved, self.task.fingerprint, path, self.cfg.resume_changed)

    def resume(self) -> tuple:
        """(start_step, history) from the latest checkpoint, or (0, {}) for a fresh run."""
        if self.rank == 0:
            ckpt.clean_partial(self.run_dir)
        found = ckpt.latest_checkpoint(self.run_dir) if self.cfg.resume == "auto" else None
        if not found:
            return 0, {}
        step, path = found
        tensors, state = ckpt.load_checkpoint(path)
        self._check_fingerprint(state.get("fingerprint", {}), path)
        self.load_state_tensors(tensors, path)
        self.task.extra_state.update(state.get("stage_state", {}))
        return step, state.get("history", {})

    # -- loops -----------------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        if self.task.eval_batches is None:
            return self.task.eval_extra() if self.task.eval_extra is not None else {}
        self.task.loss_cell.set_train(False)
        totals, count = None, 0.0
        for batch in self.task.eval_batches():
            # weighted like training: a per-token loss is averaged over all tokens, not over batch means
            weight = float(self.task.loss_tokens(batch)) if self.task.loss_tokens is not None else 1.0
            loss, aux = self._evaluate(*self._tensors(batch))
            values = [weight * float(v.asnumpy()) for v in (loss, *aux)]
            totals = values if totals is None else [t + v for t, v in zip(totals, values)]
            count += weight
        self.task.loss_cell.set_train(True)
        extra = self.task.eval_extra() if self.task.eval_extra is not None else {}
        if not count:
            return extra
        names = ["eval_loss"] + [f"eval_{n}" for n in self.task.aux_names]
        return {**{n: t / count for n, t in zip(names, totals)}, **extra}

    def fit(self) -> dict:
        """Train to train.max_steps (resuming if a checkpoint exists); returns a summary."""
        ms = self.ms
        cfg = self.cfg
        start, history = self.resume()
        metrics = MetricsLog(self.run_dir, resume_step=start, enabled=self.rank == 0)
        summary = {"resumed_from": start, "first_loss": history.get("first_loss"), "skipped_steps":
                   history.get("skipped_steps", 0)}
        self.task.loss_cell.set_train(True)
        bar = progress_bar(cfg.max_steps, start, self.desc, enabled=self.rank == 0)
        max_norm = ms.Tensor(cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1.0, ms.float32)
        timed_tokens, timed_seconds, last = 0, 0.0, {}
        compiled = set()   # batch shapes whose graphs exist; a new one compiles during its step
        try:
            for step in range(start, cfg.max_steps):
                lr = learning_rate(step, cfg.lr, cfg.max_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
                began = time.perf_counter()
                scale_value = float(self.scaler.scale_value.asnumpy())
                batches = [self.task.train_batch(step * cfg.grad_accum + m) for m in range(cfg.grad_accum)]
                weights = self._micro_weights(batches)
                shapes = {tuple(np.shape(x) for x in batch) for batch in batches} - compiled
                inv, lr_value = ms.Tensor(1.0 / scale_value, ms.float32), ms.Tensor(lr, ms.float32)
                fused = len(batches) == 1     # no accumulation: the step is the one train_step graph
                graph = self._train_step if fused else self._forward_backward
                total, losses, auxes, tokens = None, [], [], 0
                for batch, weight in zip(batches, weights):
                    tokens += self.task.tokens_in(batch)
                    scale = ms.Tensor(scale_value * weight, ms.float32)
                    args = (scale, inv, max_norm, lr_value) if fused else (scale,)
                    args += self._tensors(batch)
                    shape = tuple(np.shape(x) for x in batch)
                    if shape not in compiled:
                        compiled.add(shape)
                        self._say_compiling(f"the training step for batches of {'x'.join(map(str, shape[0]))}",
                                            graph.cached(args))
                    if fused:
                        loss, aux, finite, norm = graph(*args)
                    else:
                        loss, aux, grads = graph(*args)
                        total = grads if total is None else self._accumulate(ms.mutable(total), ms.mutable(grads))
                    losses.append(float(loss.asnumpy()))
                    auxes.append(aux)
                if total is not None:
                    finite, norm = self._update(ms.mutable(total), inv, max_norm, lr_value)
                finite = bool(finite.asnumpy())
                if not finite:
                    summary["skipped_steps"] += 1
                # the step's loss: every micro-batch (and rank) weighted as its gradient was
                loss_value = self.sum_over_ranks(sum(w * l for w, l in zip(weights, losses))) / self.world
                elapsed = time.perf_counter() - began
                if step > start and not shapes:  # steps that compiled a graph are not timed
                    timed_tokens, timed_seconds = timed_tokens + tokens, timed_seconds + elapsed
                if summary["first_loss"] is None:
                    summary["first_loss"] = loss_value
                row = {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": float(norm.asnumpy()),
                       "tokens_per_s": tokens / elapsed, "step_s": elapsed, "compiled": bool(shapes),
                       "loss_scale": scale_value, "skipped": not finite}
                for i, name in enumerate(self.task.aux_names):
                    row[name] = float(np.mean([a[i].asnumpy() for a in auxes]))
                done = step + 1
                evaluated = done == cfg.max_steps or (cfg.eval_every and done % cfg.eval_every == 0)
                if evaluated:
                    row.update(self.evaluate())
                if self.task.log_row is not None:      # the stage decides what and when (PPO: per iteration)
                    row = self.task.log_row(step, row)
                    if row is not None:
                        metrics.log(row)
                elif done % cfg.log_every == 0 or evaluated:
                    metrics.log(row)
                last = row or last
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                bar.update(1)
                if self.rank == 0 and ((cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps):
                    self.save(done, {"first_loss": summary["first_loss"], "skipped_steps": summary["skipped_steps"]})
                    maybe_kill("after_save", done)
        finally:
            bar.close()
            metrics.close()
        summary.update({"last": last, "tokens_per_s": timed_tokens / timed_seconds if timed_seconds else None,
                        "steps": cfg.max_steps})
        return summary

    def _say_compiling(self, what: str, cached: bool):
        if cached:
            self._say(f"{self.desc}: loading {what} from the compile cache ({self.compile_cache.directory})")
        else:
            later = "; a later run with the same graphs loads it from the compile cache" if self.compile_cache else ""
            self._say(f"{self.desc}: compiling {what} (once per shape; about half a minute for a 30-layer model "
                      f"on CPU{later})")

    def _say(self, message: str):
        """A line on the terminal above the progress bar (rank 0 only)."""
        if self.rank == 0:
            from tqdm import tqdm
            tqdm.write(message, file=sys.stderr)

    def sum_over_ranks(self, value: float) -> float:
        """`value` summed over the data-parallel ranks (itself on one device)."""
        if self._global_sum is None:
            return value
        return float(self._global_sum(self.ms.Tensor(np.array([value], np.float32))).asnumpy()[0])

    def _micro_weights(self, batches) -> tuple:
        """Each micro-batch's weight in the step: its share of the loss tokens of the whole global batch
        (times the world size, since the gradient reducer averages over ranks)."""
        if self.task.loss_tokens is None:
            counts = [1.0] * len(batches)
        else:
            counts = [float(self.task.loss_tokens(b)) for b in batches]
        total = self.sum_over_ranks(sum(counts))
        if total <= 0:
            return [0.0] * len(batches)
        return [c * self.world / total for c in counts]


def check_fingerprint(saved: dict, now: dict, path: str, allow_changes: bool = False):
    """Refuse to resume the checkpoint at `path` when the run's fingerprint changed, naming the keys."""
    from mindtune.errors import ConfigError

    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed and not allow_changes:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:4])
        raise ConfigError(f"train.resume: the checkpoint {path} was made by a different run: {shown}"
                          f"{' and more' if len(changed) > 4 else ''}; use another output_dir, or set "
                          "train.resume_changed=true to continue anyway")
