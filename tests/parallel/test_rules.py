"""Planner rules on hand-built cases."""
from mindtune.models.spec import get_preset
from mindtune.parallel.hardware import get_hardware
from mindtune.parallel.memory import Strategy
from mindtune.parallel.rules import check_devices, check_strategy

L7 = get_preset("llama2-7b")       # 32 heads, 32 KV heads, hidden 4096, FFN 11008, 32 layers
L70 = get_preset("llama2-70b")     # 64 heads, 8 KV heads
HW = get_hardware("910b")


def test_valid_strategy_has_no_problems():
    assert check_strategy(L7, Strategy(dp=2, mp=4), devices=8, hardware=HW, seq_length=4096, global_batch=16) == []


def test_device_product_must_match():
    (msg,) = check_strategy(L7, Strategy(dp=2, mp=2), devices=8)
    assert "2x2x1x1 = 4" in msg and "8 devices" in msg


def test_heads_must_divide_by_mp():
    problems = check_strategy(L7, Strategy(mp=3))
    assert "parallel.model_parallel=3: num_heads 32 is not divisible by 3" in problems
    assert any("intermediate_size 11008" in p for p in problems)


def test_kv_heads_limit_mp():
    problems = check_strategy(L70, Strategy(mp=16))
    assert problems == ["parallel.model_parallel=16: num_kv_heads 8 is not divisible by 16"]


def test_tensor_parallel_stays_in_a_server():
    problems = check_strategy(L70, Strategy(mp=16), hardware=HW)
    assert any("inside one server" in p for p in problems)
    # 2 x 8 NPUs with mp=8 is fine; mp must divide the server
    assert check_strategy(L70, Strategy(dp=2, mp=8), devices=16, hardware=HW) == []


def test_pipeline_rules():
    assert any("micro_batch_num=2: must be at least pipeline_stage 4" in p
               for p in check_strategy(L7, Strategy(pp=4, micro_batches=2)))
    assert any("more pipeline stages than the model's 32 layers" in p
               for p in check_strategy(L7, Strategy(pp=64, micro_batches=64)))
    assert check_strategy(L7, Strategy(pp=4, micro_batches=4)) == []


def test_batch_and_sequence_divisibility():
    assert check_strategy(L7, Strategy(dp=8), global_batch=12) == [
        "global batch 12 is not divisible by parallel.data_parallel=8"]
    assert check_strategy(L7, Strategy(cp=3), seq_length=4096) == [
        "parallel.context_parallel=3: the sequence length 4096 is not divisible by 3"]


def test_vocab_parallel_needs_divisible_vocab():
    from dataclasses import replace
    odd = replace(L7, vocab_size=32001)
    assert any("vocab_size 32001" in p for p in check_strategy(odd, Strategy(mp=2, vocab_emb_dp=False)))
    assert check_strategy(odd, Strategy(mp=2, vocab_emb_dp=True)) == []


def test_devices_beyond_a_server_come_in_whole_servers():
    assert check_devices(8, HW) == [] and check_devices(4, HW) == [] and check_devices(32, HW) == []
    assert "whole 8-NPU servers" in check_devices(12, HW)[0]
    assert check_devices(0, HW)
