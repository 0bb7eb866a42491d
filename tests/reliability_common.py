"""Shared pieces of the crash and concurrency drivers: what a writer does, and what a library's state is.

The drivers import torch and the package once, then ``fork`` a child per writer (a child costs
about a second instead of the ~6 s a fresh ``alearn`` pays to import torch). A child runs the CLI's
own ``main()`` with ``alearn``'s argv, so it executes exactly what ``alearn learn`` executes; with
``exec`` mode a real ``alearn`` process is started instead. The parent process never runs torch
operations, so forking it is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOY = HERE / "fixtures" / "toy_sentiment.csv"
ALEARN = Path(sys.executable).with_name("alearn")
TIME_KEYS = {"time", "updated", "created", "seconds"}  # wall-clock stamps and durations: the only fields two identical runs differ in
LEARN = ["learn", "--backbone", "tiny-random", "--data", str(TOY), "--steps", "3", "--max-length", "64",
         "--batch-size", "4", "--max-train", "24"]


def learn_args(lib: Path, task: str, reuse: str | None = None, force_new: bool = False) -> list[str]:
    """``alearn`` arguments that learn ``task`` from the toy file (as the router decides, into a new adapter,
    or reusing the one given)."""
    args = [*LEARN, "--library", str(lib), "--name", task, "--description", f"Is review {task} positive?"]
    return args + (["--reuse", reuse] if reuse else []) + (["--force-new"] if force_new else [])


def scenario_argv(kind: str, lib: Path) -> list[str]:
    """The writer each crash scenario runs: argv for ``alearn`` (or for ``data-txn`` below)."""
    return {"new": learn_args(lib, "t1", force_new=True), "reuse": learn_args(lib, "t1", reuse="lora-t0"),
            "data": ["data-txn", str(lib), "lora-data"], "rm": ["library", "rm", str(lib), "lora-t0"]}[kind]


def data_txn(lib: Path, adapter: str) -> None:
    """Write, in one transaction, an adapter (perturbed, as after training) with a router profile, a Fisher
    diagonal and a replay buffer beside it, as the router and the regularisers do. The adapter serves no
    task, so no reader ever parses these stand-in contents; only their safe writing is under test."""
    import torch

    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.library import AdapterLibrary

    lib_ = AdapterLibrary.open(lib)
    host = AdapterHost(load_backbone("tiny-random"))
    gen = torch.Generator().manual_seed(len(lib_.history))  # deterministic: a rerun writes the same bytes
    host.create(adapter, seed=len(lib_.history))
    with torch.no_grad():
        for p in host.trainable(adapter).values():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    state = host.state(adapter)
    with lib_.transaction() as tx:
        tx.save_adapter(host, adapter)
        # the file names the router (profile-<task>.*), EWC (ewc.safetensors) and replay (replay.json) use
        tx.write_tensors(adapter, "profile-x.safetensors", {"mean": torch.randn(64, generator=gen),
                                                            "cov": torch.eye(64)})
        tx.write_json(adapter, "profile-x.json", {"labels": ["negative", "positive"]})
        tx.write_tensors(adapter, "ewc.safetensors", {k: v.pow(2) for k, v in state.items()})
        tx.write_json(adapter, "replay.json", [{"fields": {"text": f"word {i}"}, "label": i % 2} for i in range(50)])
        tx.record({"action": "data", "adapter": adapter, "reason": "reliability test write"})


EXTRA_COMMANDS: dict[str, Any] = {}  # more child commands a driver adds: name -> function(argv) -> exit code


def run_argv(argv: list[str]) -> int:
    """Run one writer in this process; its exit code."""
    if argv[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[argv[0]](argv[1:])
    if argv[0] == "data-txn":
        data_txn(Path(argv[1]), argv[2])
        return 0
    if argv[0] == "check-loadable":
        check_loadable(Path(argv[1]))
        return 0
    if argv[0] == "open-library":  # what any later process does first: finish or drop an interrupted change
        from adaptive_learner.library import AdapterLibrary

        AdapterLibrary.open(Path(argv[1]))
        return 0
    from adaptive_learner import cli

    sys.argv = ["alearn", *argv]
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def spawn(argv: list[str], env: dict[str, str], log: Path, mode: str = "fork") -> int:
    """Start a writer: a forked child running ``argv`` (``fork``) or a real ``alearn`` process (``exec``)."""
    if mode == "exec":
        helper = argv[0] in ("data-txn", "check-loadable", "open-library", *EXTRA_COMMANDS)
        cmd = [sys.executable, str(HERE / "crash_driver.py"), *argv] if helper else [str(ALEARN), *argv]
        # one hash seed for every process: peft and the router write sets and dicts into JSON, whose order
        # (never meaning) follows it; forked children share the parent's seed already
        env = {"PYTHONHASHSEED": "0", **env}
        with open(log, "ab") as fh:
            return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=fh, stderr=fh).pid
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: quiet, one thread, then the writer; never return into the parent's code
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(env)
        import torch

        torch.set_num_threads(1)
        code = run_argv(argv)
    except BaseException:  # noqa: BLE001 - report anything, then leave
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float = 300.0) -> int:
    """Exit code of a child (negative: killed by that signal)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
        time.sleep(0.005)


def run_child(argv: list[str], log: Path, env: dict[str, str] | None = None, mode: str = "fork") -> int:
    """Run a writer to completion; its exit code."""
    return wait(spawn(argv, env or {}, log, mode))


def _normal(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _normal(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_normal(v) for v in obj]
    return obj


def snapshot(lib: Path) -> dict[str, Any]:
    """A library's state: every file's sha256 (the lock excepted) and its manifest without time stamps."""
    files = {}
    for f in sorted(lib.rglob("*")):
        rel = f.relative_to(lib).as_posix()
        if f.is_file() and rel != ".lock":
            files[rel] = "manifest" if rel == "manifest.json" else hashlib.sha256(f.read_bytes()).hexdigest()
    manifest = json.loads((lib / "manifest.json").read_text())
    return {"files": files, "manifest": _normal(manifest)}


def equivalent(lib: Path, snap: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> bool:
    """A complete after-state whose bytes differ from the reference's (same files, same tasks and adapters,
    every file matching the manifest, nothing unlisted, and what the change does not touch as before)."""
    from adaptive_learner.library import AdapterLibrary

    f, fb, fa = snap["files"], before["files"], after["files"]
    same_untouched = all(f.get(k) == v for k, v in fb.items() if fa.get(k) == v)
    m, ma = snap["manifest"], after["manifest"]
    shape = (set(m["adapters"]), set(m["tasks"]), len(m["history"]))
    return (set(f) == set(fa) and same_untouched and shape == (set(ma["adapters"]), set(ma["tasks"]),
                                                                len(ma["history"]))
            and not AdapterLibrary.open(lib, verify=False).verify())


def diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    """A short account of how two snapshots differ (for failure messages)."""
    fa, fb = a["files"], b["files"]
    parts = [f"only in first: {sorted(set(fa) - set(fb))}", f"only in second: {sorted(set(fb) - set(fa))}",
             f"differ: {sorted(k for k in set(fa) & set(fb) if fa[k] != fb[k])}"]
    if a["manifest"] != b["manifest"]:
        parts.append("manifests differ")
    return "; ".join(parts)


def fresh_copy(src: Path, dst: Path) -> Path:
    """A copy of a library to try something on."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def check_loadable(lib: Path) -> None:
    """Open ``lib`` as a user would, load each adapter through peft, read its data and predict per task."""
    from safetensors import safe_open

    from adaptive_learner.learner import Learner

    learner = Learner(lib, create=False)
    assert not learner.library.verify(), learner.library.verify()
    for task in learner.library.tasks:
        assert len(learner.predict(["a lovely film"], task)) == 1
    for f in lib.joinpath("data").rglob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            _ = [fh.get_tensor(k) for k in fh.keys()]
