"""mindtune score --model DIR --input IN.jsonl --output OUT.jsonl: the reward of each prompt/response.

DIR is a reward-model run directory or its model/ (full or adapter). Rows are {"prompt", "response"} (prompt a
string or a list of messages) or {"messages": [..., assistant turn]}, rendered with the model's chat template;
each is written back with a `score` field (and `score_normalized` with --normalize, using the reward mean and
std saved at training time). Conversations longer than the model's length lose their oldest tokens.
"""
import sys
import time


def register(sub):
    p = sub.add_parser("score", help="score prompt/response rows with a trained reward model")
    p.add_argument("--model", required=True, help="reward-model run directory or its model/")
    p.add_argument("--input", required=True, help="JSON Lines of {prompt, response} or {messages} rows")
    p.add_argument("--output", required=True, help="JSON Lines written with an added 'score' field")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=0,
                   help="tokens per sequence (default: the data.max_length the model was trained with)")
    p.add_argument("--normalize", action="store_true",
                   help="also write score_normalized = (score - mean) / std with the saved reward statistics")
    p.add_argument("--device", default="cpu", choices=["cpu", "ascend"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    p.set_defaults(func=run)


def run(args) -> int:
    from mindtune.data.formats import read_rows, write_rows
    from mindtune.data.preference import pad_sequences, scored_conversation
    from mindtune.data.sft import encode_conversation, reject_pad_token
    from mindtune.device import resolve_profile, setup_context
    from mindtune.errors import ConfigError
    from mindtune.stages.rm import Scorer, load_reward_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.max_length < 0:
        raise ConfigError(f"--max-length must be >= 1 (got {args.max_length})")
    profile = resolve_profile(args.device, precision=args.precision, key="--device")
    rows = read_rows(args.input, key="--input")
    conversations = [scored_conversation(row, where) for where, row in rows]

    setup_context(profile, graph_mode=True, seed=0)
    batch = min(args.batch_size, len(rows))
    reward_model, resolved, stats = load_reward_model(args.model, profile, batch, args.max_length)
    tokenizer, pad = resolved.tokenizer, resolved.spec.pad_token_id
    if tokenizer is None:
        raise ConfigError(f"--model: {resolved.source} has no tokenizer")
    where = f"{resolved.source}/mindtune_model.json: reward_model"
    if args.normalize and not all(isinstance(stats.get(k), (int, float)) for k in ("reward_mean", "reward_std")):
        raise ConfigError(f"--normalize: {where} has no saved reward_mean/reward_std; drop --normalize")
    max_length = args.max_length or stats["max_length"]
    sequences, cut = [], 0
    for (where, _), messages in zip(rows, conversations):
        tokens = encode_conversation(tokenizer, messages).tokens
        reject_pad_token(tokens, pad, where)
        cut += len(tokens) > max_length
        sequences.append(tokens[-max_length:])  # keep the end: the score is read at the last token
    ids, last = pad_sequences(sequences, max_length, pad)

    start = time.time()
    scores = Scorer(reward_model, batch, pad)(ids, last)
    seconds = time.time() - start
    std = stats.get("reward_std") or 1.0   # a constant reward model (std 0) is only shifted

    scored = []
    for (_, row), score in zip(rows, scores):
        out = {**row, "score": float(score)}
        if args.normalize:
            out["score_normalized"] = float((score - stats["reward_mean"]) / std)
        scored.append(out)
    write_rows(args.output, scored)
    note = f" ({cut} cut to their last {max_length} tokens)" if cut else ""
    print(f"mindtune score: {len(rows)} rows{note} in {seconds:.1f}s -> {args.output}", file=sys.stderr)
    return 0
