"""The reference for bench_data.py, run in its own environment (datasets + transformers, never mindtune's):
LLaMA-Factory's way of preparing SFT data. `datasets.load_dataset("json")` reads the file into Arrow, then
`Dataset.map(batched=True, num_proc=N)` renders each row with the chat template through a transformers fast
tokenizer over the same tokenizer.json, masks the prompt (labels -100) and writes the result to its cache.

    python ref_datasets_map.py ROWS.jsonl TOKENIZER_DIR --max-length 512 --num-proc 2 --cache DIR --sample 200

Prints one JSON line: seconds to load, seconds to map, rows, and the input_ids of the first --sample rows.
"""
import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("tokenizer")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--num-proc", type=int, default=2)
    p.add_argument("--cache", required=True)
    p.add_argument("--sample", type=int, default=200)
    args = p.parse_args()
    os.environ["HF_DATASETS_CACHE"] = args.cache
    import datasets
    from transformers import PreTrainedTokenizerFast

    meta = json.load(open(os.path.join(args.tokenizer, "tokenizer_meta.json")))
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.tokenizer, "tokenizer.json"),
                                  bos_token=meta.get("bos_token"), eos_token=meta.get("eos_token"),
                                  pad_token=meta.get("pad_token"))
    tok.chat_template = meta["chat_template"]
    max_length = args.max_length

    def messages(system, instruction, extra, output):
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]

    def process(batch):
        out = {"input_ids": [], "labels": []}
        for system, instruction, extra, output in zip(batch["system"], batch["instruction"], batch["input"],
                                                      batch["output"]):
            msgs = messages(system, instruction, extra, output)
            prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(msgs, tokenize=False)
            source = tok.encode(prompt, add_special_tokens=False)
            target = tok.encode(full[len(prompt):], add_special_tokens=False)
            if len(source) + len(target) > max_length:   # keep the response, cut the prompt from its start
                source = source[len(source) + len(target) - max_length:]
            ids = (source + target)[:max_length]
            out["input_ids"].append(ids)
            out["labels"].append(([-100] * len(source) + target)[:max_length])
        return out

    began = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=args.data, split="train")
    loaded = time.perf_counter()
    mapped = ds.map(process, batched=True, num_proc=args.num_proc, remove_columns=ds.column_names,
                    desc="datasets.map")
    done = time.perf_counter()
    print(json.dumps({"load_s": loaded - began, "map_s": done - loaded, "rows": len(mapped),
                      "sample": [list(ids) for ids in mapped.select(range(min(args.sample, len(mapped))))["input_ids"]]}))


if __name__ == "__main__":
    main()
