"""The experiment schema: one dataclass per yaml section; every key, its type, default and allowed range.

Validation is driven by the dataclass fields: `choices=`, `min=`/`max=` (inclusive) and `max_exclusive=` in a
field's metadata bound it.
Every error names the dotted key, the value and the file the value came from.
"""
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import List, Optional

from mindtune.errors import ConfigError


def opt(default, *, choices=None, min=None, max=None, max_exclusive=None, doc=""):  # noqa: A002 - yaml words
    """A dataclass field with validation metadata."""
    meta = {"choices": choices, "min": min, "max": max, "max_exclusive": max_exclusive, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


PEFT_METHODS = ("none", "lora", "prefix", "ptuning", "ptuning_v2", "prompt", "adapter", "bitfit")


@dataclass
class ModelConfig:
    """`model:` what to train.

    path: a model directory (from `mindtune convert` or a run's `model/`), or a preset name
        (tiny, smollm2-135m, llama2-7b, llama2-13b, llama2-70b, qwen2.5-7b) for random initialisation.
    spec: overrides of the architecture numbers (num_layers, hidden_size, ...) on top of the preset or directory.
    tokenizer: a tokenizer.json or sentencepiece .model; defaults to the one inside the model directory
        (the `tiny` preset uses the shipped demo tokenizer).
    chat_template: a Jinja chat template that replaces the model's own.
    """
    path: str = opt("tiny")
    spec: dict = opt({})
    tokenizer: Optional[str] = opt(None)
    chat_template: Optional[str] = opt(None)


@dataclass
class DataConfig:
    """`data:` the training rows, how they become token sequences, and the tokenized cache ([docs/data.md]).

    train: a data file (JSON Lines, JSON array, Parquet, Arrow), or a mixture: a list of files or
        {path, weight, columns, name} entries drawn in proportion to their weights (default weight 1);
        metrics.jsonl counts the rows seen from each (rows_<name>).
    eval: one data file; optional.
    columns: the file's field names for mindtune's (e.g. {instruction: question, output: answer} or
        {messages: dialog}); a mixture entry's own `columns` add to these. ShareGPT rows
        ({"conversations": [{"from", "value"}]}) are read as messages.
    max_length: tokens per sequence after the chat template.
    truncation: keep_response (cut the prompt from its start first), right (cut the end), drop (skip long rows).
    train_on_prompt: put labels on prompt tokens too (default: loss on response tokens only).
    packing: SFT: pack whole rows into sequences of max_length tokens (best-fit decreasing, once per run), each row
        attending only to itself with its own positions, so a token's loss is what it is unpadded;
        train.batch_size then counts packed sequences. Not with peft.method prompt or ptuning.
    eval_rows: at most this many rows of the eval file are used (0 = all).
    cache_dir: where tokenized data is cached (default: $MINDTUNE_CACHE_DIR, else ~/.cache/mindtune); an entry is
        keyed by the data's contents, tokenizer, chat template and the settings above, and reused by every run.
    num_workers: processes that tokenize when a cache entry is built (0 = auto: the calling process for files
        under 4 MB, else one per core up to 8).
    skip_bad_rows: count malformed rows and report the first few file:line locations instead of stopping.
    group_by_length: shuffle, then sort each mega-batch of 50 global batches by length (Hugging Face's
        group_by_length), so batches hold rows of similar length; seeded and resumable.
    """
    train: object = opt(None)
    eval: Optional[str] = opt(None)
    columns: dict = opt({})
    max_length: int = opt(512, min=8, max=131072)
    truncation: str = opt("keep_response", choices=("keep_response", "right", "drop"))
    train_on_prompt: bool = opt(False)
    packing: bool = opt(False)
    eval_rows: int = opt(0, min=0)
    cache_dir: Optional[str] = opt(None)
    num_workers: int = opt(0, min=0, max=256)
    skip_bad_rows: bool = opt(False)
    group_by_length: bool = opt(False)

    def __post_init__(self):
        from mindtune.data.sources import check_columns, parse_sources
        check_columns(self.columns, "data.columns")
        parse_sources(self.train, "data.train", self.columns)   # raises naming data.train[i].weight etc.


@dataclass
class TrainConfig:
    """`train:` the optimisation loop shared by every stage.

    batch_size: sequences per device per micro-step. grad_accum: micro-steps per optimizer step.
    max_steps: optimizer steps. lr, schedule (cosine|linear|constant), warmup_steps, min_lr_ratio.
    weight_decay, adam_beta1, adam_beta2, adam_eps: AdamW. max_grad_norm: global-norm clip (0 disables).
    precision: auto (fp32 on cpu, bf16 on 910b, fp16 on 910a) | fp32 | fp16 | bf16.
    loss_scale: initial dynamic loss scale for fp16; loss_scale_window: good steps before it doubles.
    log_every, eval_every, save_every: in optimizer steps (0: only at the end).
    save_total_limit: checkpoints kept. resume: auto (continue the latest checkpoint in output_dir) | never
        (refuse a non-empty output_dir). resume_changed: continue a checkpoint even though what decides the run's
        maths (batch size, accumulation, data files, model, PEFT settings, seed, max length, stage options)
        changed since it was written (refused by default, naming the changed keys).
    graph_mode: compile with MindSpore graph mode (20-30x faster than PyNative on CPU).
    compile_cache: keep the compiled training graphs in $MINDTUNE_CACHE_DIR (default ~/.cache/mindtune)/graphs
        and load them in a later run whose graphs are the same (mindtune/engine/compile_cache.py: what decides
        that).
    length_buckets: sft runs each batch at the shortest of this many sequence lengths that holds its longest
        row, instead of always at data.max_length; the lengths are planned before the run from the batches it
        will read (the multiples of 8 that pad least; mindtune/engine/buckets.py), and each compiles once.
        1 pads every batch to data.max_length, as does data.packing (its sequences are nearly full). The loss per
        token does not change.
    eval_metrics: task metrics on greedy generations for data.eval's prompts at each evaluation (exact_match,
        contains, rouge, bleu), logged as eval_exact_match, eval_rougeL, ... (sft; full fine-tuning and LoRA).
    eval_max_new_tokens: the longest generation eval_metrics scores.
    """
    batch_size: int = opt(4, min=1)
    grad_accum: int = opt(1, min=1)
    max_steps: int = opt(100, min=1)
    length_buckets: int = opt(3, min=1, max=8)
    lr: float = opt(2e-4, min=0.0)
    schedule: str = opt("cosine", choices=("cosine", "linear", "constant"))
    warmup_steps: int = opt(0, min=0)
    min_lr_ratio: float = opt(0.0, min=0.0, max=1.0)
    weight_decay: float = opt(0.0, min=0.0)
    adam_beta1: float = opt(0.9, min=0.0, max=1.0)
    adam_beta2: float = opt(0.999, min=0.0, max=1.0)
    adam_eps: float = opt(1e-8, min=0.0)
    max_grad_norm: float = opt(1.0, min=0.0)
    precision: str = opt("auto", choices=("auto", "fp32", "fp16", "bf16"))
    loss_scale: float = opt(65536.0, min=1.0)
    loss_scale_window: int = opt(1000, min=1)
    log_every: int = opt(1, min=1)
    eval_every: int = opt(0, min=0)
    save_every: int = opt(0, min=0)
    save_total_limit: int = opt(2, min=1)
    resume: str = opt("auto", choices=("auto", "never"))
    resume_changed: bool = opt(False)
    graph_mode: bool = opt(True)
    compile_cache: bool = opt(True)
    eval_metrics: List[str] = opt([])
    eval_max_new_tokens: int = opt(64, min=1)


@dataclass
class PeftConfig:
    """`peft:` parameter-efficient fine-tuning.

    method: none | lora | prefix | ptuning | ptuning_v2 | prompt | adapter | bitfit.
    rank, alpha, dropout, rslora (scale alpha/sqrt(rank) instead of alpha/rank), target_modules
        (regular expressions matched against each projection's own name, MindFormers' `wq wk wv wo w1 w2 w3`,
        e.g. `w[qkvo]`; not against its path, so every layer gets the same projections).
    num_virtual_tokens: prompt/prefix length for prefix, ptuning, ptuning_v2 and prompt.
    prompt_init: prompt tuning's initial soft prompt: vocab (embeddings of random vocabulary tokens), text (the
        embeddings of `prompt_init_text`, tokenized with the model tokenizer and repeated to the length), random.
    prompt_init_text: the text for prompt_init: text.
    encoder: P-tuning v1 prompt encoder: lstm (bidirectional, 2 layers, then an MLP head) or mlp.
    encoder_hidden_size: width of the P-tuning encoder and of prefix tuning's reparameterisation MLP
        (0 = the model's hidden size).
    prefix_projection: P-tuning v2 only: reparameterise the deep prompts through MindPet's MLP (default off).
    adapter_size: bottleneck width of the Houlsby adapters. adapter_modules: the projections whose outputs
        pass through an adapter (wo = attention output, w2 = FFN output).
    """
    method: str = opt("none", choices=PEFT_METHODS)
    rank: int = opt(8, min=1)
    alpha: float = opt(16.0, min=0.0)
    dropout: float = opt(0.0, min=0.0, max_exclusive=1.0)
    rslora: bool = opt(False)
    target_modules: List[str] = opt(["wq", "wk", "wv", "wo"])
    num_virtual_tokens: int = opt(16, min=1)
    prompt_init: str = opt("vocab", choices=("vocab", "text", "random"))
    prompt_init_text: Optional[str] = opt(None)
    encoder: str = opt("lstm", choices=("lstm", "mlp"))
    encoder_hidden_size: int = opt(0, min=0)
    prefix_projection: bool = opt(False)
    adapter_size: int = opt(64, min=1)
    adapter_modules: List[str] = opt(["wo", "w2"])


@dataclass
class ParallelConfig:
    """`parallel:` semi-auto parallel strategy (see `mindtune plan`). All 1 means a single device.

    data_parallel, model_parallel (tensor), pipeline_stage, micro_batch_num (>= pipeline_stage when it is > 1),
    context_parallel, use_seq_parallel, optimizer_shard, recompute (none|selective|full), vocab_emb_dp.
    """
    data_parallel: int = opt(1, min=1)
    model_parallel: int = opt(1, min=1)
    pipeline_stage: int = opt(1, min=1)
    context_parallel: int = opt(1, min=1)
    micro_batch_num: int = opt(1, min=1)
    use_seq_parallel: bool = opt(False)
    optimizer_shard: bool = opt(False)
    recompute: str = opt("none", choices=("none", "selective", "full"))
    vocab_emb_dp: bool = opt(True)

    @property
    def device_num(self) -> int:
        return self.data_parallel * self.model_parallel * self.pipeline_stage * self.context_parallel


@dataclass
class RMConfig:
    """`rm:` reward-model training (stage: rm).

    center_rewards_coef: weight of the center-rewards term coef * mean((r_chosen + r_rejected)^2), which keeps
        rewards near zero (0 disables it; 0.01 is a common value).
    stats_pairs: after training, rewards of at most this many pairs (the eval file if given, else the training
        file) give the reward mean and std saved with the model for PPO to normalise by.
    stats_at_start: also measure the accuracy on those pairs before training (the base model plus the untrained
        head), saved as initial_accuracy: shows how much of the preference the base model already encodes.
    """
    center_rewards_coef: float = opt(0.0, min=0.0)
    stats_pairs: int = opt(1024, min=1)
    stats_at_start: bool = opt(False)


@dataclass
class RolloutOptions:
    """Sampling and iteration keys shared by the online stages (ppo, grpo).

    iterations: rollout-and-update rounds (the run's length; train.max_steps is derived from it).
    rollout_batch: prompts rolled out per iteration on each device.
    epochs: passes over each rollout's samples (shuffled mini-batches of train.batch_size x train.grad_accum).
    max_new_tokens: longest response. temperature, top_k (0 = all), top_p (1 = all): sampling; the policy's
        log-probabilities use the same temperature (never the top-k/top-p-processed distribution).
    eval_every: iterations between held-out evaluations on data.eval (0: only at the end); eval_prompts: at most
        this many held-out prompts, rolled out with a fixed seed.
    """
    iterations: int = opt(20, min=1)
    rollout_batch: int = opt(8, min=1)
    epochs: int = opt(1, min=1, max=100)
    max_new_tokens: int = opt(32, min=1, max=4096)
    temperature: float = opt(1.0, min=1e-3, max=100.0)
    top_k: int = opt(0, min=0)
    top_p: float = opt(1.0, min=1e-6, max=1.0)
    eval_every: int = opt(0, min=0)
    eval_prompts: int = opt(64, min=1)


@dataclass
class PPOConfig(RolloutOptions):
    """`ppo:` proximal policy optimisation against a reward model (stage: ppo; InstructGPT step 3).

    actor: the starting policy: an SFT run directory, its model/, or a model directory (full or LoRA adapter);
        default model.path. reward_model: a reward-model run directory (stage: rm), required.
    kl_coef: initial coefficient of the per-token KL penalty -kl_coef * KL(actor || reference).
    adaptive_kl, target_kl, kl_horizon: Ziegler et al.'s adaptive controller (the coefficient grows when the
        measured KL exceeds target_kl and shrinks below it). kl_estimator: k1 (log ratio, can be negative) or
        k3 (exp(-x) - 1 + x with x the log ratio, never negative) for the penalty.
    gamma, lam: GAE discount and lambda over response tokens.
    cliprange: policy ratio clip. cliprange_value: value clip around the rollout's values. vf_coef: value loss
        weight. entropy_coef: entropy bonus (0 disables).
    reward_clip: the reward model's score, normalised with its saved mean/std, is clipped to [-c, c].
    missing_eos_penalty: subtracted from the score of a response that hit max_new_tokens without EOS.
    whiten_advantages: normalise advantages over each rollout's response tokens (never the rewards).
    critic_init: reward_model (the critic starts as the reward model: its adapter or weights and its head) or
        actor (the starting policy with a new value head).
    ptx_coef, ptx_data: InstructGPT's PPO-ptx: ptx_coef x the SFT loss on rows of ptx_data (SFT rows) is added
        to every policy update (0 disables).
    share_base: roles whose bases are the same model share one frozen copy of it (false loads a copy per role:
        only for measuring what sharing saves).
    """
    actor: Optional[str] = opt(None)
    reward_model: Optional[str] = opt(None)
    kl_coef: float = opt(0.05, min=0.0)
    adaptive_kl: bool = opt(False)
    target_kl: float = opt(6.0, min=1e-6)
    kl_horizon: int = opt(10000, min=1)
    kl_estimator: str = opt("k1", choices=("k1", "k3"))
    gamma: float = opt(1.0, min=0.0, max=1.0)
    lam: float = opt(0.95, min=0.0, max=1.0)
    cliprange: float = opt(0.2, min=0.0, max=10.0)
    cliprange_value: float = opt(0.2, min=0.0)
    vf_coef: float = opt(0.1, min=0.0)
    entropy_coef: float = opt(0.0, min=0.0)
    reward_clip: float = opt(10.0, min=0.0)
    missing_eos_penalty: float = opt(0.0, min=0.0)
    whiten_advantages: bool = opt(True)
    critic_init: str = opt("reward_model", choices=("reward_model", "actor"))
    ptx_coef: float = opt(0.0, min=0.0)
    ptx_data: Optional[str] = opt(None)
    share_base: bool = opt(True)


@dataclass
class DPOConfig:
    """`dpo:` direct preference optimisation on preference pairs (stage: dpo).

    loss: sigmoid (DPO, Rafailov et al. 2023), ipo (Azar et al. 2023), simpo (Meng et al. 2024: no reference,
        length-normalised log-probabilities, target margin gamma).
    beta: the KL strength (sigmoid, ipo) or reward scale (simpo). label_smoothing: conservative DPO's assumed
        label noise (sigmoid only). gamma: SimPO's target reward margin.
    sft_coef: weight of an SFT (negative log-likelihood) term on the chosen response (RPO; LLaMA-Factory's
        pref_ftx); 0 disables it.
    reference: reserved for a reference other than the starting model (refused for now); the reference is the
        starting model (with a PEFT method the frozen base plus the starting adapter, sharing the base weights).
        precompute_reference: compute the reference log-probabilities once before training and keep them with
        the run (RUN_DIR/reference_logps.npz).
    """
    loss: str = opt("sigmoid", choices=("sigmoid", "ipo", "simpo"))
    beta: float = opt(0.1, min=0.0)
    label_smoothing: float = opt(0.0, min=0.0, max=0.5)
    gamma: float = opt(0.5, min=0.0)
    sft_coef: float = opt(0.0, min=0.0)
    reference: Optional[str] = opt(None)
    precompute_reference: bool = opt(False)


@dataclass
class GRPOConfig(RolloutOptions):
    """`grpo:` group relative policy optimisation (stage: grpo; DeepSeekMath), no critic.

    reward: a list of rewards, each a reward-model run directory, a built-in rule (exact_match, regex, length)
        or `module:function` called as fn(prompt, response, row) -> float. reward_weights: one weight per
        reward (default all 1).
    answer_field: the row field exact_match compares with. normalize: exact_match's normalisations (whitespace,
        case, punctuation, first_line). pattern: the regex rule's pattern (reward 1 when it matches).
        target_length: the length rule's target in characters (reward -|len - target| / target).
    num_generations: samples per prompt (the group). scale_rewards: group (divide by the group's std) or none
        (Dr. GRPO). epsilon: the ratio clip; epsilon_high: a higher upper clip (DAPO; 0 = epsilon).
    beta: KL to the reference (k3 estimator); 0 loads no reference model.
    loss_type: token (every token of the batch weighs the same; DAPO / Dr. GRPO) or sequence (mean per
        response, then over responses; the original GRPO).
    """
    reward: List[str] = opt(["exact_match"])
    reward_weights: List[float] = opt([])
    answer_field: str = opt("answer")
    normalize: List[str] = opt(["whitespace", "case"])
    pattern: Optional[str] = opt(None)
    target_length: int = opt(100, min=1)
    num_generations: int = opt(4, min=2)
    scale_rewards: str = opt("group", choices=("group", "none"))
    epsilon: float = opt(0.2, min=0.0, max=10.0)
    epsilon_high: float = opt(0.0, min=0.0, max=10.0)
    beta: float = opt(0.04, min=0.0)
    loss_type: str = opt("token", choices=("token", "sequence"))


@dataclass
class ExperimentConfig:
    """A whole experiment: `mindtune train CONFIG.yaml` runs the stage it names."""
    stage: str = opt("sft", choices=("sft", "rm", "ppo", "dpo", "grpo"))
    seed: int = opt(42, min=0)
    output_dir: str = opt("runs/default")
    device: str = opt("cpu", choices=("cpu", "ascend"))
    hardware: str = opt("auto", choices=("auto", "cpu", "910a", "910b"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp, where: str):
    """Check `value` against the annotation `tp`; returns the value converted where yaml is lenient."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp) or (object,)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # yaml reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif tp is object:
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build(cls, data, sources: dict, prefix: str = ""):
    """Instantiate dataclass `cls` from a mapping, checking every key; `sources` maps dotted keys to files."""
    def where(key):
        dotted = f"{prefix}{key}"
        origin = sources.get(dotted) or next((v for k, v in sources.items() if k.startswith(dotted + ".")), None)
        return f"{dotted} (in {origin})" if origin else dotted

    if not isinstance(data, dict):
        section = prefix.rstrip(".")
        origin = sources.get(section)
        name = f"{section} (in {origin})" if origin else (section or "config")
        raise ConfigError(f"{name}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = [k for k in known if k.startswith(str(key)[:3])]
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key {where(key)}{hint}")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, data[name] if data[name] is not None else {}, sources, f"{prefix}{name}.")
            continue
        value = _coerce(data[name], tp, f"{where(name)}")
        meta = f.metadata
        if value is not None:
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{where(name)}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
            if meta.get("min") is not None and value < meta["min"]:
                raise ConfigError(f"{where(name)}: {value!r} is below the minimum {meta['min']}")
            if meta.get("max") is not None and value > meta["max"]:
                raise ConfigError(f"{where(name)}: {value!r} is above the maximum {meta['max']}")
            if meta.get("max_exclusive") is not None and value >= meta["max_exclusive"]:
                raise ConfigError(f"{where(name)}: {value!r} must be below {meta['max_exclusive']}")
        values[name] = value
    return cls(**values)
