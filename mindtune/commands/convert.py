"""mindtune convert SRC DST: a Hugging Face directory or a GGUF file -> a mindtune model directory;
with --to-hf, a mindtune model directory (or a run's model) -> a Hugging Face directory."""
import sys
import time


def register(sub):
    p = sub.add_parser("convert", help="Hugging Face dir or GGUF file -> mindtune model dir (--to-hf: back)")
    p.add_argument("src", help="Hugging Face directory or .gguf file (with --to-hf: mindtune model or run directory)")
    p.add_argument("dst", help="directory to write")
    p.add_argument("--to-hf", action="store_true", help="export a mindtune model directory to Hugging Face format")
    p.add_argument("--max-position", type=int, default=0,
                   help="override the longest sequence the model is built for (default: the source's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mindtune.models.convert import convert, export_hf
    from mindtune.models.model_dir import read_model_dir

    start = time.time()
    if args.to_hf:
        export_hf(args.src, args.dst)
        print(f"mindtune convert: wrote Hugging Face directory {args.dst} ({time.time() - start:.1f}s)",
              file=sys.stderr)
        return 0
    convert(args.src, args.dst, max_position=args.max_position)
    spec = read_model_dir(args.dst).spec
    print(f"mindtune convert: wrote {args.dst}: {spec.num_layers} layers, hidden {spec.hidden_size}, "
          f"{spec.num_parameters() / 1e6:.1f}M parameters ({time.time() - start:.1f}s)", file=sys.stderr)
    return 0
