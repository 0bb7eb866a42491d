"""Bad input on the command line (hypothesis): one wrong argument in an otherwise good ``alearn learn``,
and junk arguments to every command. Each ends with exit code 2 (or 1 for ``verify``), an error on
stderr and no traceback, and the library it was aimed at is byte-for-byte untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import make_toy_library, run_alearn, tree_digest
from bad_input_common import SCALE, count, no_downloads, tally  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"


_digest = tree_digest


def _alearn(args: list[str]) -> tuple[int, str]:
    code, _, err = run_alearn(*args)
    return code, err


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    return make_toy_library(tmp_path_factory.mktemp("badcli") / "lib", "--steps", "1", "--max-length", "48",
                            "--batch-size", "4", "--max-train", "8")


junk = st.one_of(st.text(max_size=20), st.sampled_from(["0", "-1", "1e9", "nan", "inf", "", "../x", "/", "a,b",
                                                        "--steps", "-", "toy", "lora-toy"]))
NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
BAD = {  # one thing wrong in an otherwise good `alearn learn`, and values that make it wrong
    "--steps": st.sampled_from(["0", "-1", "x", "", "1.5"]),
    "--batch-size": st.sampled_from(["0", "-3", "x"]),
    "--max-length": st.sampled_from(["0", "-8", "x"]),
    "--lr": st.sampled_from(["0", "-1", "nan", "inf", "x"]),
    "--lora-plus-ratio": st.sampled_from(["0", "-16", "nan", "inf", "x"]),
    "--max-train": st.sampled_from(["x", "", "0", "-1"]),
    "--patience": st.sampled_from(["0", "-1", "x"]),
    "--eval-every": st.sampled_from(["0", "-2", "x"]),
    "--monitor": st.sampled_from(["", "acc", "LOSS", "f1"]),
    "--label-scoring": st.sampled_from(["", "longest", "x", "SUM"]),
    "--head-mix": st.sampled_from(["", "best", "1.5", "-0.1"]),
    "--head-views": st.sampled_from(["words", "pair,x", "TEXT"]),
    "--head-view-rule": st.sampled_from(["", "max", "GATED"]),
    "--head-calibrate": st.sampled_from(["", "yes", "adapter"]),
    "--seed": st.sampled_from(["x", "1.5", "-1", "4294967296"]),
    "--name": junk.filter(lambda v: bool(v) and (not set(v) <= NAME_OK or ".." in v or not v[0].isalnum()
                                                 or len(v) > 64)),
    "--label-column": junk.filter(lambda v: v not in ("label", "text")),
    "--text-column": junk.filter(lambda v: v not in ("label", "text")),
    "--labels": junk.filter(lambda v: v and not {"negative", "positive"} <= {x.strip() for x in v.split(",")}),
    "--reuse": junk.filter(lambda v: v != "lora-toy" and not v.startswith("-")),
    "--task": junk,  # given together with --data: exactly one of them is allowed
    "--backbone": junk.filter(lambda v: v != "tiny-random" and not v.startswith("-")),
    "--description": st.sampled_from(["", " ", "\t"]),
    "--dtype": junk.filter(lambda v: v.strip().lower() not in ("float32", "bfloat16", "fp32", "bf16")),
    "--data": junk.map(lambda v: str(FIXTURES / f"missing-{len(v)}.csv")),
}


@st.composite
def bad_learns(draw):
    opt = draw(st.sampled_from(sorted(BAD)))
    return opt, draw(BAD[opt])


@settings(max_examples=int(60 * SCALE), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad_learns(), st.booleans())
def test_learn_with_one_bad_argument(built_library, fault, with_force_new):
    count("alearn learn arguments")
    opt, value = fault
    good = {"--data": str(FIXTURES / "toy_sentiment.csv"), "--description": "Positive?", "--steps": "1",
            "--max-length": "48", "--batch-size": "4", "--max-train": "8", "--name": "toy2"}
    args = ["learn", "--library", str(built_library)]
    for k, v in {**good, opt: value}.items():
        args.append(f"{k}={v}")  # one token, so a value like "-1" or "--steps" stays a value
    if with_force_new and opt != "--reuse":
        args.append("--force-new")
    before = _digest(built_library)
    code, err = _alearn(args)
    assert code == 2 and "Traceback" not in err and err.strip(), (args, code, err)
    assert _digest(built_library) == before


@settings(max_examples=int(40 * SCALE), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["predict", "library ls", "library show", "library rm", "library verify", "run", "data show",
                        "learn"]), st.lists(junk, min_size=0, max_size=3))
def test_any_command_with_junk_arguments(built_library, command, extra):
    count("alearn commands with junk")
    assume(not (command == "run" and extra and extra[0] in ("seed",)))
    args = command.split() + (["--library", str(built_library)] if command in ("predict",) else [])
    if command in ("library rm", "library ls", "library show", "library verify") and extra:
        args.append(extra[0] if not extra[0].startswith("-") else str(built_library))
        extra = extra[1:]
    if command == "library rm":
        assume("lora-toy" not in extra)  # removing the real adapter is not bad input
    before = _digest(built_library)
    code, err = _alearn(args + extra)
    assert "Traceback" not in err, (args + extra, err)
    assert code in (0, 1, 2), (args + extra, code, err)
    if code != 0:
        assert err.strip()
    assert _digest(built_library) == before


@pytest.mark.parametrize("flag", ["--max-train", "--max-test", "--steps"])
def test_bench_refuses_non_positive_sizes(flag, tmp_path):
    code, err = _alearn(["bench", "seed", flag, "-3", "--out", str(tmp_path / "b")])
    assert code == 2 and "must be positive" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", [
    ["bench", "seed"], ["run", "seed"],
    ["learn", "--data", str(FIXTURES / "toy_sentiment.csv"), "--description", "Tone?"]])
def test_a_negative_number_of_lr_retries_is_one_error_line(command, tmp_path):
    out = ["--out", str(tmp_path / "b")] if command[0] != "learn" else ["--library", str(tmp_path / "b")]
    code, err = _alearn(command + ["--lr-retries", "-1", *out])
    assert code == 2 and "--lr-retries must be 0 or more" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    code, err = _alearn(command + ["--lora-plus-ratio", "0", *out])
    assert code == 2 and "--lora-plus-ratio must be a positive number" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
