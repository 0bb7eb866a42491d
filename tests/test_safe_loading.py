"""Nothing loaded runs code: only safetensors, JSON and YAML (safe_load); names cannot escape their folders.

A static check walks the syntax tree of every module under src/ for the ways Python can be made to
run code while loading (pickle and friends, torch.load without weights_only=True, yaml.load, eval,
trust_remote_code=True ...); a runtime check runs learn, predict, verify and rm with
torch.load and pickle switched off; property tests try arbitrary names as task, adapter and file names.
"""

import ast
import pickle
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_alearn
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_learner.errors import UserError
from adaptive_learner.library.check import check_file_name
from adaptive_learner.tasks.spec import check_name

SRC = Path(__file__).resolve().parents[1] / "src" / "adaptive_learner"
FIXTURES = Path(__file__).parent / "fixtures"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "jsonpickle"}
UNSAFE_CALLS = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
                "yaml.full_load_all", "pd.read_pickle", "pandas.read_pickle", "eval", "exec", "torch.jit.load"}
UNSAFE_NAMES = {"yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_uses(source: str) -> list[str]:
    """Every way ``source`` could run code while loading data, as "line: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and _dotted(node) in UNSAFE_NAMES:
            found.append(f"{node.lineno}: {_dotted(node)}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in UNSAFE_CALLS:
                found.append(f"{node.lineno}: {name}(...)")
            if name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
                found.append(f"{node.lineno}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and not _is_const(_kw(node, "allow_pickle"), False) \
                    and _kw(node, "allow_pickle") is not None:
                found.append(f"{node.lineno}: np.load with allow_pickle")
            if _is_const(_kw(node, "trust_remote_code"), True):
                found.append(f"{node.lineno}: trust_remote_code=True")
            if _is_const(_kw(node, "use_safetensors"), False):
                found.append(f"{node.lineno}: use_safetensors=False")
    return found


def test_the_static_check_catches_what_it_should():
    bad = ("import pickle\nfrom dill import loads\nimport yaml\nyaml.load(s)\nyaml.load(s, Loader=yaml.Loader)\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\neval('1')\n"
           "AutoModel.from_pretrained(p, trust_remote_code=True)\n")
    assert len(unsafe_uses(bad)) == 10
    good = "import yaml, json\nyaml.safe_load(s)\ntorch.load(p, weights_only=True)\njson.load(f)\nnp.load(p)\n"
    assert unsafe_uses(good) == []


def test_no_module_under_src_can_run_code_while_loading():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    problems = {str(f.relative_to(SRC)): u for f in files if (u := unsafe_uses(f.read_text(encoding="utf-8")))}
    assert problems == {}


def test_learn_predict_verify_rm_never_unpickle(tmp_path, monkeypatch, capsys):
    """The whole user path with every unpickler replaced by a trap."""
    from adaptive_learner import cli

    def trap(*a, **k):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(torch, "load", trap)
    monkeypatch.setattr(pickle, "load", trap)
    monkeypatch.setattr(pickle, "loads", trap)

    def run(*args):
        old, sys.argv = sys.argv, ["alearn", *map(str, args)]
        try:
            cli.main()
        except SystemExit as exc:
            assert exc.code in (0, None), capsys.readouterr().err
        finally:
            sys.argv = old

    lib = tmp_path / "lib"
    common = ["--backbone", "tiny-random", "--steps", "1", "--max-length", "48", "--batch-size", "4",
              "--max-train", "8"]
    run("learn", "--library", lib, "--data", FIXTURES / "toy_sentiment.csv", "--description", "Positive?", *common)
    run("predict", "--library", lib, "--task", "toy_sentiment", "lovely")  # a new process: adapter read from disk
    run("library", "verify", lib)
    run("library", "rm", lib, "lora-toy_sentiment")
    assert "lora-toy_sentiment" in capsys.readouterr().out


# --------------------------------------------------------------------------- names
def _is_one_safe_component(name: str, limit: int) -> bool:
    return (0 < len(name) <= limit and Path(name).name == name and name not in (".", "..") and ".." not in name
            and not any(c in name for c in "/\\\0:") and not name.startswith((".", "-")) and name.isascii())


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=0, max_size=120))
def test_any_accepted_task_or_adapter_name_is_one_safe_path_component(name):
    try:
        ok = check_name(name, "adapter")
    except UserError as exc:
        assert "invalid adapter name" in str(exc)
        return
    assert ok == name and _is_one_safe_component(name, 64)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_any_accepted_file_name_is_one_safe_path_component(name):
    try:
        check_file_name(name)
    except UserError:
        return
    assert _is_one_safe_component(name, 128)


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "a\\b", "/etc/passwd", "", ".hidden", "-rf", "a" * 65,
                                  "C:x", "x\0y", "naïve", " spaced", "a..b"])
def test_bad_names_are_refused(name):
    with pytest.raises(UserError):
        check_name(name, "task")


@pytest.mark.parametrize("args,message", [
    (["learn", "--library", "{lib}", "--data", str(FIXTURES / "toy_sentiment.csv"), "--description", "d",
      "--name", "../escape"], "invalid task name"),
    (["learn", "--library", "{lib}", "--data", str(FIXTURES / "toy_sentiment.csv"), "--description", "d",
      "--name", "/abs"], "invalid task name"),
    (["library", "rm", "{lib}", "../../etc"], "no adapter"),
    (["predict", "--library", "{lib}", "--task", "../x", "text"], "not in the library"),
])
def test_path_like_names_on_the_command_line_are_one_clear_error(tmp_path, tiny_backbone, args, message):
    from adaptive_learner.library import AdapterLibrary

    lib = tmp_path / "lib"
    AdapterLibrary.create(lib, tiny_backbone.identity, {})
    code, _, err = run_alearn(*[a.replace("{lib}", str(lib)) for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in lib.iterdir()) == [".lock", "manifest.json"]
