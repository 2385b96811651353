"""mindtune generate --model DIR --input IN.jsonl --output OUT.jsonl: continue prompts with a KV cache.

Rows are `{"prompt": ...}` (rendered with the model's chat template as a user turn unless --raw) or
`{"messages": [...]}` (always templated); each is written back with an `output` field.
"""
import sys
import time


def register(sub):
    p = sub.add_parser("generate", help="generate completions for prompt rows (KV cache, batched)")
    p.add_argument("--model", required=True, help="model directory, a run's model/, or a run directory")
    p.add_argument("--input", required=True, help="JSON Lines of {prompt} or {messages} rows")
    p.add_argument("--output", required=True, help="JSON Lines written with an added 'output' field")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="take the most likely token (the default unless "
                                                        "--temperature/--top-k/--top-p is given)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--raw", action="store_true", help="feed 'prompt' rows as plain text, without the chat template")
    p.add_argument("--device", default="cpu", choices=["cpu", "ascend"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    p.set_defaults(func=run)


def sampling_from_args(args):
    from mindtune.errors import ConfigError
    from mindtune.generation import SamplingConfig

    sampled = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    if args.greedy and sampled:
        raise ConfigError("--greedy cannot be combined with --temperature/--top-k/--top-p")
    if not sampled:
        return SamplingConfig(greedy=True)
    return SamplingConfig(greedy=False, temperature=1.0 if args.temperature is None else args.temperature,
                          top_k=args.top_k or 0, top_p=1.0 if args.top_p is None else args.top_p).check()


def run(args) -> int:
    from mindtune.data.formats import prompt_text, read_rows, write_rows
    from mindtune.device import resolve_profile, setup_context
    from mindtune.errors import ConfigError
    from mindtune.generation import Generator
    from mindtune.generation.load import resolve_generation_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {args.batch_size})")
    profile = resolve_profile(args.device, precision=args.precision, key="--device")
    sampling = sampling_from_args(args)
    rows = read_rows(args.input, key="--input")
    resolved, spec, weights, extras = resolve_generation_model(args.model, args.seed)
    tokenizer = resolved.tokenizer
    if tokenizer is None:
        raise ConfigError(f"--model: {resolved.source} has no tokenizer")
    prompts = [tokenizer.encode(prompt_text(row, where, tokenizer, args.raw)) for where, row in rows]

    setup_context(profile, graph_mode=True, seed=args.seed)
    eos = {spec.eos_token_id} | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set())
    generator = Generator(spec, weights, profile, batch_size=min(args.batch_size, len(prompts)))
    # similar lengths batched together waste less padding; results go back in input order
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    start = time.time()
    out = generator.generate([prompts[i] for i in order], args.max_new_tokens, sampling, seed=args.seed,
                             eos_ids=sorted(eos), soft_prompt=extras.get("soft_prompt"),
                             prefix_kv=extras.get("prefix_kv"))
    texts = [None] * len(prompts)
    for rank, i in enumerate(order):
        texts[i] = tokenizer.decode(out.tokens[rank, :out.lengths[rank]])
    seconds = time.time() - start

    write_rows(args.output, ({**row, "output": text} for (_, row), text in zip(rows, texts)))
    print(f"mindtune generate: {len(rows)} rows, {int(out.lengths.sum())} new tokens in {seconds:.1f}s "
          f"-> {args.output}", file=sys.stderr)
    return 0
