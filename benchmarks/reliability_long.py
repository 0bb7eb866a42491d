"""The long reliability runs behind RELIABILITY.md: run by hand (minutes), not in CI.

    python benchmarks/reliability_long.py [--quick] [--seed 1] [--out benchmarks/results/reliability.json]

1. crash:       SIGKILL writers of a library at write points and random times (tests/crash_driver.py),
                in forked children and in real ``alearn`` processes (``--mode exec``)
2. resume:      SIGKILL ``alearn run`` mid-sequence, resume it, compare with an uninterrupted run
3. concurrency: two writers at once (new, reuse, create race), lock timeout, readers during commits,
                and W writers x K learns into one library (tests/concurrency_driver.py)
4. tamper:      random damage to every file the manifest lists (a bit, a truncation, bytes appended,
                deletion, replacement, a swap with another file) and planted files: each must be
                detected and named
5. bad input:   the hypothesis properties of tests/test_bad_input_{properties,cli}.py, 20x the CI examples
6. disk errors: tests/test_disk_errors.py (ENOSPC at every write of a learn, EROFS, EDQUOT, read-only)

Prints one markdown table (the figures of RELIABILITY.md) and writes every detail as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _driver(name: str, tag: str, work: Path, *args: str) -> dict[str, Any]:
    report = work / f"{tag}.json"
    cmd = [sys.executable, str(TESTS / f"{name}.py"), "--work", str(work / tag), "--report", str(report), *args]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=6 * 3600)
    return json.loads(report.read_text())


def _pytest(targets: list[str], env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(TESTS / t) for t in targets)]
    print("$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"exit": proc.returncode, "summary": last}


def _tally(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        for k, v in json.loads(line).items():
            out.setdefault(k, {}).update(v)
    return out


TAMPER = ["flip a bit", "truncate", "append bytes", "delete", "random bytes", "swap with another file"]


def _tamper(f: Path, how: str, other: Path, rng: random.Random) -> None:
    data = f.read_bytes()
    if how == "flip a bit":
        i = rng.randrange(len(data))
        f.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:])
    elif how == "truncate":
        f.write_bytes(data[: rng.randrange(len(data))])
    elif how == "append bytes":
        f.write_bytes(data + rng.randbytes(rng.randint(1, 64)))
    elif how == "delete":
        f.unlink()
    elif how == "random bytes":
        f.write_bytes(rng.randbytes(len(data)))
    else:
        f.write_bytes(other.read_bytes())


def tamper_trials(base: Path, work: Path, n: int, rng: random.Random) -> dict[str, Any]:
    """Damage one listed file of a copy of ``base`` at random; opening must fail and name it."""
    sys.path.insert(0, str(ROOT / "src"))
    from adaptive_learner.errors import LibraryError
    from adaptive_learner.library import AdapterLibrary

    files = sorted(r for a in AdapterLibrary.open(base).adapters.values() for r in a["files"])
    tried = detected = 0
    missed = []
    for i in range(n):
        lib = work / "tamper"
        shutil.rmtree(lib, ignore_errors=True)
        shutil.copytree(base, lib)
        rel, how = rng.choice(files), rng.choice(TAMPER)
        other = rng.choice([f for f in files if (lib / f).read_bytes() != (lib / rel).read_bytes()])
        _tamper(lib / rel, how, lib / other, rng)
        tried += 1
        try:
            AdapterLibrary.open(lib)
            missed.append(f"{rel}: {how}")
        except LibraryError as exc:
            ok = rel in str(exc) and any(rel in p for p in AdapterLibrary.open(lib, verify=False).verify())
            detected += ok
            if not ok:
                missed.append(f"{rel}: {how}: {exc}")
    for planted in ("adapters/lora-t0/adapter_model.bin", "data/lora-t0/extra.json"):
        lib = work / "tamper"
        shutil.rmtree(lib, ignore_errors=True)
        shutil.copytree(base, lib)
        (lib / planted).write_bytes(b"planted")
        tried += 1
        problems = AdapterLibrary.open(lib, verify=False).verify()
        detected += any(planted in p for p in problems)
    return {"files": files, "tried": tried, "detected": detected, "missed": missed}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts, to check the script itself")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/reliability-long"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.json")
    args = ap.parse_args(argv)
    q = args.quick
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rng, seed, t0 = random.Random(args.seed), str(args.seed), time.monotonic()
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "seed": args.seed}
    res["crash_fork"] = _driver("crash_driver", "crash-fork", args.work, "--trials", "30" if q else "200",
                                "--seed", seed)
    shutil.copytree(args.work / "crash-fork" / "base", args.work / "base")
    res["crash_exec"] = _driver("crash_driver", "crash-exec", args.work, "--trials", "3" if q else "20",
                                "--seed", seed, "--mode", "exec")
    res["resume"] = _driver("resume_driver", "resume", args.work, "--trials", "3" if q else "12", "--seed", seed)
    res["concurrency"] = _driver("concurrency_driver", "concurrency", args.work, "--rounds", "1" if q else "3",
                                 "--stress-writers", "2" if q else "4", "--stress-learns", "2" if q else "4")
    res["tamper"] = tamper_trials(args.work / "base", args.work, 50 if q else 1000, rng)
    tally = args.work / "tally.jsonl"
    res["bad_input"] = _pytest(["test_bad_input_properties.py", "test_bad_input_cli.py"],
                               {"BAD_INPUT_EXAMPLES": "2" if q else "20", "RELIABILITY_TALLY": str(tally)})
    res["disk"] = _pytest(["test_disk_errors.py"], {"RELIABILITY_TALLY": str(tally)})
    res["tally"] = _tally(tally)
    res["seconds"] = round(time.monotonic() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    print(table(res))
    return 0


def table(r: dict[str, Any]) -> str:
    """The figures as markdown."""
    cf, ce, rs, cc, tp = r["crash_fork"], r["crash_exec"], r["resume"], r["concurrency"], r["tamper"]
    bad = sum(r["tally"].get("bad_inputs", {}).values())
    disk = sum(len(v) for v in r["tally"].get("disk_full_writes", {}).values())
    rows = [
        ("SIGKILL of a writer (forked alearn)", f"{cf['killed']} kills", f"{cf['corrupted']} corrupted"),
        ("SIGKILL of a real `alearn` process", f"{ce['killed']} kills", f"{ce['corrupted']} corrupted"),
        ("SIGKILL of `alearn run`, then --resume", f"{rs['killed']} kills", f"{rs['different']} differ"),
        ("concurrent writers", f"{cc['concurrent_writers']} writers", f"{cc['lost_updates']} lost updates"),
        ("readers during commits", f"{cc['reads']} reads", f"{cc['reader_errors']} errors"),
        ("tampered / planted files", f"{tp['tried']} tried", f"{tp['detected']} detected"),
        ("generated bad inputs", f"{bad} inputs", f"{r['bad_input']['summary']}"),
        ("disk full at each write of a learn", f"{disk} write points", f"{r['disk']['summary']}"),
    ]
    lines = ["| check | tried | result |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + f"\n\n{r['seconds']} s in all, seed {r['seed']}, {r['date']}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
