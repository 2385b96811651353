"""`mindtune generate` end to end on a tiny model directory."""
import json
import os

import pytest

from reference.tiny import lively_weights

from mindtune.cli import main
from mindtune.models.loading import TINY_TOKENIZER
from mindtune.models.model_dir import write_model_dir
from mindtune.models.spec import PRESETS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A directory shaped like a training run's output: RUN_DIR/model holds the model."""
    root = tmp_path_factory.mktemp("run")
    write_model_dir(str(root / "model"), PRESETS["tiny"], lively_weights(PRESETS["tiny"], seed=1),
                    tokenizer_dir=TINY_TOKENIZER)
    return root


def generator_greedy(model_dir, rows, max_new_tokens):
    """The Generator's greedy continuation of each row, one row at a time, templated as the CLI documents."""
    from mindtune.data.tokenizer import load_tokenizer
    from mindtune.device import resolve_profile
    from mindtune.generation import Generator, SamplingConfig
    from mindtune.models.model_dir import read_model_dir

    model = read_model_dir(str(model_dir))
    tok = load_tokenizer(model.path)
    gen = Generator(model.spec, model.weights(), resolve_profile(), batch_size=1)
    texts = []
    for row in rows:
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
        eos = sorted({model.spec.eos_token_id} | ({tok.eos_id} if tok.eos_id is not None else set()))
        out = gen.generate([ids], max_new_tokens, SamplingConfig(greedy=True), eos_ids=eos)
        texts.append(tok.decode(out.tokens[0, :out.lengths[0]]))
    assert any(texts), "the tiny model's greedy text is empty: the comparison would prove nothing"
    return texts


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_writes_every_row_back_with_output(run_dir, tmp_path):
    rows = [{"prompt": "what is one plus one", "id": 1},
            {"messages": [{"role": "user", "content": "say hi"}], "id": 2},
            {"prompt": "hello", "id": 3}]
    write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    for model in (run_dir, run_dir / "model"):          # a run directory or its model/
        assert main(["generate", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output",
                     str(out), "--max-new-tokens", "8", "--batch-size", "2"]) == 0
        got = read_rows(out)
        assert [{k: v for k, v in r.items() if k != "output"} for r in got] == rows
    greedy = [r["output"] for r in got]
    assert greedy == generator_greedy(run_dir / "model", rows, 8)      # the CLI adds no change of its own

    # seeded sampling is reproducible and differs from greedy; --raw feeds prompts without the template
    args = ["generate", "--model", str(run_dir), "--input", str(tmp_path / "in.jsonl"), "--max-new-tokens", "8",
            "--temperature", "1.5", "--top-p", "0.95", "--seed", "4", "--output"]
    assert main(args + [str(tmp_path / "s1.jsonl")]) == 0
    assert main(args + [str(tmp_path / "s2.jsonl")]) == 0
    s1 = [r["output"] for r in read_rows(tmp_path / "s1.jsonl")]
    assert s1 == [r["output"] for r in read_rows(tmp_path / "s2.jsonl")]
    assert s1 != greedy
    assert main(["generate", "--model", str(run_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "raw.jsonl"), "--max-new-tokens", "8", "--raw"]) == 0
    raw = [r["output"] for r in read_rows(tmp_path / "raw.jsonl")]
    assert raw[1] == greedy[1] and raw != greedy      # messages rows are templated either way


def test_bad_input_is_one_line_error(run_dir, tmp_path, capsys):
    write_rows(tmp_path / "in.jsonl", [{"prompt": "ok"}, {"text": "no prompt field"}])
    code = main(["generate", "--model", str(run_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and f"{tmp_path / 'in.jsonl'}:2" in err and "prompt" in err
    assert not (tmp_path / "out.jsonl").exists()
    assert main(["generate", "--model", str(tmp_path / "nowhere"), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_prompt_tuning_adapter_generates_through_its_soft_prompt(run_dir, tmp_path):
    """An adapter directory whose soft prompt is the embeddings of real tokens must generate exactly what the
    base model generates with those tokens written before each prompt (--raw, so the text is literal)."""
    from mindtune.data.tokenizer import load_tokenizer
    from mindtune.models.model_dir import read_model_dir

    base = read_model_dir(str(run_dir / "model"))
    tok = load_tokenizer(base.path)
    virtual = tok.encode("the answer")
    soft = base.weights()["model.tok_embeddings.embedding_weight"][virtual]
    write_model_dir(str(tmp_path / "adapter"), base.spec, {"peft.prompt_embeddings": soft},
                    meta={"base_model": base.path, "peft": {"method": "prompt",
                                                            "num_virtual_tokens": len(virtual)}},
                    tokenizer_dir=base.path, adapter=True)
    write_rows(tmp_path / "in.jsonl", [{"prompt": " is"}, {"prompt": " one plus"}])
    write_rows(tmp_path / "joined.jsonl", [{"prompt": "the answer is"}, {"prompt": "the answer one plus"}])
    assert main(["generate", "--model", str(tmp_path / "adapter"), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "a.jsonl"), "--max-new-tokens", "6", "--raw"]) == 0
    assert main(["generate", "--model", str(run_dir), "--input", str(tmp_path / "joined.jsonl"),
                 "--output", str(tmp_path / "b.jsonl"), "--max-new-tokens", "6", "--raw"]) == 0
    for joined, part in (("the answer is", " is"), ("the answer one plus", " one plus")):
        assert tok.encode(joined) == virtual + tok.encode(part)          # the premise of the comparison
    assert [r["output"] for r in read_rows(tmp_path / "a.jsonl")] == \
        [r["output"] for r in read_rows(tmp_path / "b.jsonl")]


def test_wrong_prefix_shape_and_missing_npu_are_one_line_errors(run_dir, tmp_path, capsys):
    import numpy as np

    from mindtune.models.model_dir import read_model_dir

    base = read_model_dir(str(run_dir / "model"))
    spec = base.spec
    wrong = np.zeros((spec.num_layers, 2, spec.num_kv_heads + 1, 3, spec.head_dim), np.float32)  # one head too many
    write_model_dir(str(tmp_path / "prefix"), spec, {"peft.prefix_kv": wrong},
                    meta={"base_model": base.path, "peft": {"method": "prefix", "num_virtual_tokens": 3}},
                    tokenizer_dir=base.path, adapter=True)
    write_rows(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    args = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    assert main(["generate", "--model", str(tmp_path / "prefix"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mindtune generate: error: {tmp_path / 'prefix'}: peft.prefix_kv has shape "
                   f"{wrong.shape}, this model needs (layers, 2, kv_heads, P, head_dim) = "
                   f"{(spec.num_layers, 2, spec.num_kv_heads, 3, spec.head_dim)}"]
    assert main(["generate", "--model", str(run_dir), "--device", "ascend", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mindtune generate: error: --device: ascend, but this host has no "
                                               "Ascend NPU (no /dev/davinci* device)")
    assert "source ascend_env/set_env.sh" in err[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_decoder_refuses_weights_of_a_changed_architecture(run_dir):
    """BitFit adds q/k/v biases to a bias-free model: new weights with them cannot go into the built decoder
    (they would be silently ignored, or a KeyError), and a prefix of the wrong shape cannot fill the cache."""
    import numpy as np

    from mindtune.device import resolve_profile
    from mindtune.errors import CheckpointError
    from mindtune.generation import Generator, SamplingConfig
    from mindtune.models.model_dir import read_model_dir

    model = read_model_dir(str(run_dir / "model"))
    spec, weights = model.spec, model.weights()
    assert not spec.qkv_bias
    gen = Generator(spec, weights, resolve_profile(), batch_size=1)
    gen.generate([[5, 6, 7]], 2, SamplingConfig(greedy=True))        # builds the decoder
    biased = dict(weights)
    for i in range(spec.num_layers):
        for w in ("wq", "wk", "wv"):
            rows = weights[f"model.layers.{i}.attention.{w}.weight"].shape[0]
            biased[f"model.layers.{i}.attention.{w}.bias"] = np.ones(rows, np.float32)
    with pytest.raises(CheckpointError, match=r"^generation weights: q/k/v biases \(model\.layers\.0\.attention"
                                              r"\.wk\.bias, \.\.\.\) the spec has no place for; .*new Generator"):
        gen.update_weights(biased)
    kv = np.zeros((spec.num_kv_heads, 2, spec.head_dim + 1), np.float32)
    with pytest.raises(CheckpointError, match=r"^prefix: shape \(\d+, 2, \d+\), this model needs"):
        gen.generate([[5, 6, 7]], 2, SamplingConfig(greedy=True), prefix_kv=[(kv, kv)] * spec.num_layers)


def test_weights_without_the_embedding_are_one_line_error(run_dir, tmp_path, capsys):
    from mindtune.models.model_dir import read_model_dir

    base = read_model_dir(str(run_dir / "model"))
    weights = {k: v for k, v in base.weights().items() if k != "model.tok_embeddings.embedding_weight"}
    write_model_dir(str(tmp_path / "noemb"), base.spec, weights, tokenizer_dir=base.path)
    write_rows(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    assert main(["generate", "--model", str(tmp_path / "noemb"), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mindtune generate: error: generation weights: missing tensor 'model.tok_embeddings.embedding_weight' "
        "(the token embedding)"]
    assert not (tmp_path / "out.jsonl").exists()
