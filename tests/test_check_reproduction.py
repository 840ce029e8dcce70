"""tools/check_reproduction.py's verdict on a re-run: bit for bit on the same kind of machine, within the
tolerance elsewhere, and within it too where a record names only its processor (no instruction set)."""

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_reproduction.py"
spec = importlib.util.spec_from_file_location("check_reproduction", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

ENV = {"processor": "AMD EPYC", "torch": "2.14.1", "torch_threads": 2, "cpu_count": 2, "machine": "x86_64"}


def record(acc: float, **env) -> dict:
    return {"config": {"train": {"budget": "epochs"}, "optimizer": "sgd", "seed": 0},
            "metrics": {"test_acc": acc, "steps": 10}, "epochs": [{"test_acc": acc}], "env": {**ENV, **env}}


def verdict(ref: dict, new: dict, capsys) -> tuple[int, str]:
    code = tool.report({tool.key(ref): ref}, {tool.key(new): new}, 0.05)
    return code, capsys.readouterr().out


def test_same_instruction_set_must_be_bit_for_bit(capsys):
    code, out = verdict(record(0.411, cpu_capability="AVX2"), record(0.398, cpu_capability="AVX2"), capsys)
    assert code == 1 and "DIFFERS (bit for bit)" in out
    code, out = verdict(record(0.411, cpu_capability="AVX2"), record(0.411, cpu_capability="AVX2"), capsys)
    assert code == 0 and "reproduced (bit for bit)" in out


def test_another_instruction_set_is_held_to_the_tolerance(capsys):
    code, out = verdict(record(0.411, cpu_capability="AVX512"), record(0.398, cpu_capability="AVX2"), capsys)
    assert code == 0 and "another kind of machine" in out
    code, out = verdict(record(0.411, cpu_capability="AVX512"), record(0.30, cpu_capability="AVX2"), capsys)
    assert code == 1 and "DIFFERS" in out


def test_a_record_that_names_only_its_processor_falls_back_to_the_tolerance_and_says_so(capsys):
    code, out = verdict(record(0.411), record(0.411, cpu_capability="AVX2"), capsys)
    assert code == 0 and "reproduced (bit for bit)" in out
    code, out = verdict(record(0.411), record(0.398, cpu_capability="AVX2"), capsys)
    assert code == 0 and "not bit for bit on a processor of the same name" in out
    code, out = verdict(record(0.411), record(0.30, cpu_capability="AVX2"), capsys)
    assert code == 1 and "DIFFERS" in out
