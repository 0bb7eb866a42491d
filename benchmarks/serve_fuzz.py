"""API fuzzing of `alearn serve`: schemathesis against /openapi.json, then hand-written hostile requests.

Starts the real server (`alearn serve` in a subprocess, on a free loopback port, with a bearer token)
on a small library (``toy`` and ``pairs`` learned on the tiny-random backbone; ``--backbone
smollm2-135m`` for the real one), and sends it:

1. schemathesis (``st run``, all its phases: examples, coverage, fuzzing, stateful), in three passes:
   every operation but delete with the token; every operation without it; then delete with it
   (last, as it may remove adapters). Each pass writes a HAR file; every response is counted.
2. hostile requests by hand (httpx, and a raw socket for what httpx refuses to send): bodies over
   the caps (declared and chunked), deep nesting, wrong types, non-UTF-8 bytes and lone surrogates,
   path tricks in task, adapter and file names, unknown routes, every method, bad or missing tokens,
   broken HTTP, and seeded random Unicode inputs.

Counts responses by status class; a failure is any 5xx, any response body with "Traceback", or a
server that stops answering. Afterwards: the server's log is searched for tracebacks, the server is
stopped, and the library is checked with `alearn library verify` (plus: nothing written outside it,
no upload left in the server's temp folder). Writes everything to JSON.

    python benchmarks/serve_fuzz.py                       # tiny-random, 100 examples per operation and pass
    python benchmarks/serve_fuzz.py --examples 20 --random-inputs 50     # quicker
    python benchmarks/serve_fuzz.py --backbone smollm2-135m
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_harness import TOY, Server, build_library, copy_library, verify  # noqa: E402

TOKEN = "fuzz-token"
MIB = 1024 * 1024


# ---------------------------------------------------------------------- results
class Tally:
    def __init__(self) -> None:
        self.by_class: collections.Counter[str] = collections.Counter()
        self.by_status: collections.Counter[str] = collections.Counter()
        self.failures: list[dict[str, Any]] = []
        self.cases: list[dict[str, Any]] = []

    def add(self, source: str, name: str, status: int | None, body: str, category: str = "") -> None:
        klass = "no response" if status is None else f"{status // 100}xx"
        self.by_class[klass] += 1
        self.by_status[str(status)] += 1
        bad = []
        if status is not None and status >= 500:
            bad.append("5xx")
        if "Traceback" in body:
            bad.append("traceback in body")
        if bad:
            self.failures.append({"source": source, "case": name, "status": status, "why": bad,
                                  "body": body[:300]})
        if source == "hostile":
            self.cases.append({"category": category, "case": name, "status": status, "ok": not bad})

    def out(self) -> dict[str, Any]:
        return {"responses": sum(self.by_class.values()), "by_class": dict(sorted(self.by_class.items())),
                "by_status": dict(sorted(self.by_status.items())), "5xx": self.by_class.get("5xx", 0),
                "tracebacks_in_bodies": sum("traceback in body" in f["why"] for f in self.failures),
                "failures": self.failures}


# ---------------------------------------------------------------------- schemathesis
def schemathesis_pass(srv: Server, name: str, work: Path, examples: int, seed: int, auth: bool,
                      include_delete: bool, only_delete: bool = False) -> dict[str, Any]:
    report = work / f"st-{name}"
    shutil.rmtree(report, ignore_errors=True)
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{srv.url}/openapi.json", "--max-examples", str(examples),
           "--seed", str(seed), "--workers", "1", "--continue-on-failure", "--no-color",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_schema_conformance,response_headers_conformance",
           "--report", "har", "--report-dir", str(report), "--request-timeout", "120"]
    if auth:
        cmd += ["--header", f"Authorization: Bearer {srv.token}"]
    if only_delete:
        cmd += ["--include-path", "/v1/adapters/{name}"]
    elif not include_delete:
        cmd += ["--exclude-path", "/v1/adapters/{name}"]
    shown = " ".join(c if "Bearer" not in c else "'Authorization: Bearer ***'" for c in cmd[3:])
    print(f"$ st {shown}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=work)
    seconds = time.monotonic() - t0
    (work / f"st-{name}.log").write_text(proc.stdout + proc.stderr)
    summary = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith(("Test cases:", "❌", "✅"))]
    tail = proc.stdout[proc.stdout.rfind("SUMMARY"):] if "SUMMARY" in proc.stdout else proc.stdout[-3000:]
    hars = sorted(report.glob("*.json"))
    entries = json.loads(hars[-1].read_text())["log"]["entries"] if hars else []
    return {"name": name, "exit": proc.returncode, "seconds": round(seconds, 1), "summary": summary,
            "report_tail": tail[-2500:], "entries": entries}


# ---------------------------------------------------------------------- raw HTTP
def raw(srv: Server, data: bytes, timeout: float = 10, half_close: bool = False) -> tuple[int | None, str]:
    """Send bytes as they are; (status, body) of the first response, or (None, why) if none came (the
    server closed the connection, or said nothing for ``timeout`` s)."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
            try:
                s.sendall(data)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before reading everything
            while True:
                try:
                    b = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not b:
                    break
                chunks.append(b)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    resp = b"".join(chunks)
    if not resp.startswith(b"HTTP/"):
        return None, "connection closed without a response"
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if 100 <= status < 200 and body.startswith(b"HTTP/"):  # an interim answer (100 Continue): the final one follows
        head, _, body = body.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", "replace")


def http(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    return (f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + b"".join(
        f"{k}: ".encode("latin-1") + (v.encode("latin-1") if isinstance(v, str) else v) + b"\r\n"
        for k, v in hdrs.items()) + b"\r\n" + body)


def multipart(fields: list[tuple[bytes, bytes, bytes | None]], boundary: bytes = b"fuzzfuzz") -> tuple[bytes, str]:
    """A multipart body from (name, value, filename or None), bytes as given (non-UTF-8 allowed)."""
    out = b""
    for name, value, filename in fields:
        disp = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename is not None else b"")
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disp + b"\r\n\r\n" + value + b"\r\n"
    return out + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


# ---------------------------------------------------------------------- hostile cases
Case = tuple[str, str, Callable[[], tuple[int | None, str]]]  # (category, name, send)


def hostile_cases(srv: Server, client: httpx.Client, random_inputs: int, seed: int) -> list[Case]:
    A = srv.auth
    J = {"content-type": "application/json"}
    toy = TOY.read_bytes()
    small_csv = b"text,label\nlovely film,pos\nawful film,neg\nsuperb,pos\ndull,neg\n"

    def req(method: str, path: str, **kw: Any) -> Callable[[], tuple[int | None, str]]:
        def send() -> tuple[int | None, str]:
            r = client.request(method, path, **kw)
            return r.status_code, r.text
        return send

    def post_json(path: str, raw_body: bytes, auth: bool = False) -> Callable[[], tuple[int | None, str]]:
        return req("POST", path, content=raw_body, headers={**J, **(A if auth else {})})

    def upload(fields: dict[str, str], filename: str, data: bytes) -> Callable[[], tuple[int | None, str]]:
        return req("POST", "/v1/learn", data={"steps": "2", "max_length": "64", "batch_size": "4", **fields},
                   files={"file": (filename, data)}, headers=A)

    def raw_case(data: bytes, half_close: bool = False) -> Callable[[], tuple[int | None, str]]:
        return lambda: raw(srv, data, half_close=half_close)

    def raw_form(fields: list[tuple[bytes, bytes, bytes | None]]) -> Callable[[], tuple[int | None, str]]:
        body, ctype = multipart(fields)
        return raw_case(http("POST", "/v1/learn", {"Content-Type": ctype, "Authorization": f"Bearer {srv.token}"},
                             body))

    def chunked(path: str, parts: list[bytes], auth: bool = False) -> Callable[[], tuple[int | None, str]]:
        return req("POST", path, content=iter(parts), headers={**J, **(A if auth else {})})

    cases: list[Case] = []
    add = lambda cat, name, fn: cases.append((cat, name, fn))  # noqa: E731

    # -- huge
    add("huge", "predict body 3 MiB, Content-Length declared", post_json("/v1/predict",
        b'{"inputs": ["' + b"a" * (3 * MIB) + b'"]}'))
    add("huge", "predict body 3 MiB, chunked (no length)", chunked("/v1/predict",
        [b'{"inputs": ["'] + [b"a" * 65536] * 48 + [b'"]}']))
    add("huge", "learn JSON 11 MiB, chunked", chunked("/v1/learn", [b'{"task": "'] + [b"a" * MIB] * 11 + [b'"}'],
        auth=True))
    add("huge", "learn upload 11 MiB", upload({"description": "d"}, "big.csv", b"text,label\n" + b"a,b\n" * (3 * MIB)))
    add("huge", "100k inputs", post_json("/v1/predict", json.dumps({"inputs": ["a"] * 100_000}).encode()))
    add("huge", "one input of 1M characters",
        post_json("/v1/predict", json.dumps({"inputs": ["é" * 900_000]}).encode()))
    add("huge", "an input object with 50k fields", post_json("/v1/predict",
        json.dumps({"inputs": [{f"k{i}": "a" for i in range(50_000)}]}).encode()))
    add("huge", "a number of 5000 digits", post_json("/v1/predict", b'{"inputs": [' + b"9" * 5000 + b"]}"))
    add("huge", "seed of 5000 digits", post_json("/v1/learn", b'{"task": "sst2", "seed": ' + b"9" * 5000 + b"}", True))
    add("huge", "Content-Length of 10^30", raw_case(http("POST", "/v1/predict",
        {"Content-Type": "application/json", "Content-Length": "1" + "0" * 30}, b"{}")))
    add("huge", "a header of 200 kB", raw_case(http("GET", "/healthz", {"X-Big": "a" * 200_000})))
    add("huge", "1000 headers", raw_case(http("GET", "/healthz", {f"X-H{i}": "a" for i in range(1000)})))
    add("huge", "a URL of 100 kB", raw_case(http("GET", "/v1/jobs/" + "a" * 100_000)))
    add("huge", "description of 1M characters", upload({"description": "d" * MIB}, "t.csv", toy))
    add("huge", "200 form fields", raw_form([(f"f{i}".encode(), b"x", None) for i in range(200)]))

    # -- nested
    for depth in (1000, 100_000):
        add("nested", f"predict: list nested {depth} deep", post_json("/v1/predict", b"[" * depth + b"]" * depth))
        add("nested", f"predict: object nested {depth} deep", post_json("/v1/predict",
            b'{"inputs": [' + b'{"a": ' * depth + b'"x"' + b"}" * depth + b"]}"))
        add("nested", f"learn: object nested {depth} deep", post_json("/v1/learn",
            b'{"task": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}", True))
    add("nested", "inputs: list of lists", post_json("/v1/predict", b'{"inputs": [[["a"]]]}'))
    add("nested", "labels nested", post_json("/v1/learn", b'{"task": "sst2", "labels": [["a", ["b"]]]}', True))

    # -- wrong types
    for body in (b'{"inputs": "superb"}', b'{"inputs": 1}', b'{"inputs": null}', b'{"inputs": true}',
                 b'{"inputs": [1, 2]}', b'{"inputs": [null]}', b'{"inputs": [{"first": 1}]}', b'{"inputs": {}}',
                 b'{"inputs": ["a"], "task": 3}', b'{"inputs": ["a"], "task": ["toy"]}', b"[]", b"null", b"3",
                 b'"text"', b'{"inputs": [1e999]}', b"1e999999", b'{"inputs": ["a"], "task": "toy", "task": "pairs"}',
                 b'{"inputs": ["NaN"], "task": NaN}', b""):
        add("wrong types", f"predict {body[:40]!r}", post_json("/v1/predict", body))
    for body in (b'{"task": 1}', b'{"task": "sst2", "steps": "many"}', b'{"task": "sst2", "steps": -1}',
                 b'{"task": "sst2", "steps": 1.5}', b'{"task": "sst2", "lr": NaN}', b'{"task": "sst2", "lr": Infinity}',
                 b'{"task": "sst2", "lr": -Infinity}', b'{"task": "sst2", "seed": 1e400}',
                 b'{"task": "sst2", "seed": 123456789012345678901234567890}', b'{"task": "sst2", "text_column": "x"}',
                 b'{"task": "sst2", "labels": {"a": 1}}', b'{"task": "sst2", "force_new": "maybe"}',
                 b'{"task": "sst2", "router": 7}', b'{"task": "sst2", "unknown": 1}', b"[1, 2]", b"null", b'"sst2"',
                 b"{", b""):
        add("wrong types", f"learn {body[:40]!r}", post_json("/v1/learn", body, True))
    add("wrong types", "learn form: steps not a number", upload({"description": "d", "steps": "x"}, "t.csv", toy))
    add("wrong types", "learn form: the file as a text field",
        req("POST", "/v1/learn", data={"description": "d"}, files={"name": ("x.csv", b"x")}, headers=A))
    add("wrong types", "learn form: a text field as the file", raw_form([(b"description", b"d", None),
                                                                          (b"file", b"text,label\n", None)]))
    add("wrong types", "learn form: two files", req("POST", "/v1/learn", data={"description": "d"}, headers=A,
        files=[("file", ("a.csv", small_csv)), ("file", ("b.csv", small_csv))]))
    add("wrong types", "learn: text/plain", req("POST", "/v1/learn", content=b"sst2",
                                                headers={"content-type": "text/plain", **A}))
    add("wrong types", "learn: urlencoded", req("POST", "/v1/learn", data={"task": "sst2"}, headers=A))
    add("wrong types", "learn: multipart without boundary", req("POST", "/v1/learn", content=b"garbage",
        headers={"content-type": "multipart/form-data", **A}))
    add("wrong types", "learn: multipart, wrong boundary", req("POST", "/v1/learn", content=b"--zz\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=ZZ", **A}))
    add("wrong types", "learn: multipart cut short", raw_case(http("POST", "/v1/learn",
        {"Content-Type": "multipart/form-data; boundary=fuzzfuzz", "Authorization": f"Bearer {srv.token}"},
        b'--fuzzfuzz\r\nContent-Disposition: form-data; name="description"\r\n\r\nd')))
    add("wrong types", "predict: text/plain", req("POST", "/v1/predict", content=b'{"inputs":["a"]}',
                                                  headers={"content-type": "text/plain"}))
    add("wrong types", "predict: gzip that is not", req("POST", "/v1/predict", content=b"\x1f\x8b junk",
                                                         headers={**J, "content-encoding": "gzip"}))

    # -- non-UTF-8 and invalid Unicode
    add("non-UTF-8", "predict: bytes ff fe", post_json("/v1/predict", b'{"inputs": ["\xff\xfe"]}'))
    add("non-UTF-8", "predict: latin-1 declared", req("POST", "/v1/predict",
        content='{"inputs":["é"]}'.encode("latin-1"), headers={"content-type": "application/json; charset=latin-1"}))
    add("non-UTF-8", "predict: UTF-16", post_json("/v1/predict", '{"inputs":["lovely"]}'.encode("utf-16")))
    add("non-UTF-8", "predict: UTF-32", post_json("/v1/predict", '{"inputs":["lovely"]}'.encode("utf-32")))
    add("non-UTF-8", "predict: overlong UTF-8", post_json("/v1/predict", b'{"inputs": ["\xc0\xaf"]}'))
    add("non-UTF-8", "predict: encoded surrogate bytes", post_json("/v1/predict", b'{"inputs": ["\xed\xa0\x80"]}'))
    for where, body in (("a toy input", b'{"inputs": ["\\ud800 lovely"], "task": "toy"}'),
                        ("a routed input", b'{"inputs": ["\\udfff"]}'),
                        ("a pair field", b'{"inputs": [{"first": "\\ud800", "second": "x"}], "task": "pairs"}'),
                        ("a field name", b'{"inputs": [{"\\ud800": "x"}]}'),
                        ("the task", b'{"inputs": ["a"], "task": "\\ud800"}'),
                        ("a reversed pair", b'{"inputs": ["\\udc00\\ud800"], "task": "toy"}')):
        add("non-UTF-8", f"predict: lone surrogate in {where}", post_json("/v1/predict", body))
    for where, body in (("task", b'{"task": "\\ud800"}'), ("name", b'{"task": "sst2", "name": "\\ud800"}'),
                        ("description", b'{"task": "sst2", "description": "\\ud800", "dry_run": true}'),
                        ("labels", b'{"task": "sst2", "labels": ["\\ud800", "b"], "dry_run": true}'),
                        ("reuse", b'{"task": "sst2", "reuse": "\\ud800"}')):
        add("non-UTF-8", f"learn: lone surrogate in {where}", post_json("/v1/learn", body, True))
    add("non-UTF-8", "learn JSON: bytes ff", post_json("/v1/learn", b'{"task": "\xff"}', True))
    add("non-UTF-8", "upload: latin-1 CSV", upload({"description": "d"}, "t.csv",
                                                   "text,label\ncafé crème,pos\nbad,neg\n".encode("latin-1") * 3))
    add("non-UTF-8", "upload: UTF-16 CSV", upload({"description": "d"}, "t.csv", small_csv.decode().encode("utf-16")))
    add("non-UTF-8", "upload: random bytes as .csv",
        upload({"description": "d"}, "t.csv", random.Random(seed).randbytes(4096)))
    add("non-UTF-8", "upload: random bytes as .jsonl", upload({"description": "d"}, "t.jsonl",
                                                              random.Random(seed + 1).randbytes(4096)))
    add("non-UTF-8", "upload: NUL bytes", upload({"description": "d"}, "t.csv", b"text,label\n\x00\x00,\x00\n" * 5))
    add("non-UTF-8", "form: description bytes ff fe", raw_form([(b"description", b"\xff\xfe", None),
                                                                (b"file", small_csv, b"t.csv")]))
    add("non-UTF-8", "form: file name bytes ff fe", raw_form([(b"description", b"d", None),
                                                              (b"file", small_csv, b"\xff\xfe.csv")]))
    add("non-UTF-8", "form: field name bytes ff", raw_form([(b"\xff", b"x", None), (b"file", small_csv, b"t.csv")]))
    add("non-UTF-8", "header value bytes ff fe", raw_case(http("GET", "/v1/library", {"X-Junk": b"\xff\xfe"})))
    add("non-UTF-8", "token bytes ff fe", raw_case(http("POST", "/v1/learn", {"Authorization": b"Bearer \xff\xfe",
        "Content-Type": "application/json"}, b'{"task": "sst2"}')))
    add("non-UTF-8", "path bytes ff", raw_case(http("GET", "/v1/jobs/\xff")))
    add("non-UTF-8", "path %ED%A0%80 (a surrogate)", req("GET", "/v1/jobs/%ED%A0%80"))

    # -- path tricks
    for name in ("../../x", "..", ".", ".hidden", "/abs", "x/../y", "x\\..\\y", "x\n", "x\x00", "a" * 65,
                 "lora-toy/../lora-pairs", "con", "x%2F..%2F..", " x", "x "):
        add("path tricks", f"upload with task name {name[:30]!r}",
            upload({"description": "d", "name": name, "dry_run": "true"}, "t.csv", toy))
    for fname in ("../../etc/passwd.csv", "..\\..\\x.csv", "/etc/cron.d/x.csv", "x.csv\x00.exe", "a/" * 200 + "x.csv",
                  ".csv", "..csv", "....csv", "x" * 5000 + ".csv", "x.CSV", "~root/x.csv", "x.csv/", "x.csv."):
        add("path tricks", f"upload with file name {fname[:30]!r}",
            upload({"description": "d", "dry_run": "true"}, fname, toy))
    add("path tricks", "learn JSON name ../../x", req("POST", "/v1/learn", json={"task": "sst2", "name": "../../x"},
                                                     headers=A))
    add("path tricks", "learn JSON reuse ../lora-toy", req("POST", "/v1/learn",
        json={"task": "sst2", "reuse": "../lora-toy"}, headers=A))
    add("path tricks", "learn JSON reuse lora-toy/../lora-pairs", req("POST", "/v1/learn",
        json={"task": "sst2", "reuse": "lora-toy/../lora-pairs"}, headers=A))
    add("path tricks", "predict task ../../etc/passwd", req("POST", "/v1/predict",
        json={"inputs": ["a"], "task": "../../etc/passwd"}))
    add("path tricks", "predict task 'toy\\n'", req("POST", "/v1/predict", json={"inputs": ["a"], "task": "toy\n"}))
    for path in ("..%2F..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%2E%2E%2F%2E%2E", "..%5C..",
                 "lora-toy%2F..%2Flora-pairs", "lora-toy%00", "lora-toy%0A", ".", "%2F", "%2Fetc%2Fpasswd", "~", "lora-toy%20", "%252e%252e",
                 "a" * 2000):  # (httpx itself resolves a literal "/../": those go raw, below)
        add("path tricks", f"DELETE /v1/adapters/{path[:40]}", req("DELETE", f"/v1/adapters/{path}", headers=A))
    for path in ("/v1/adapters/../../etc/passwd", "/v1/adapters/..%2f..%2fmanifest.json", "/v1/../v1/library",
                 "//v1//library", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/adapters/lora-toy/..",
                 "/v1/adapters/lora-toy/../lora-pairs",
                 "http://evil.example/v1/library"):
        method = "DELETE" if "adapters" in path else "GET"
        add("path tricks", f"raw {method} {path}", raw_case(http(method, path, {"Authorization":
                                                                               f"Bearer {srv.token}"})))

    # -- unknown routes and methods
    for path in ("/", "/v1", "/v1/", "/v2/predict", "/v1/predict/", "/v1/learn/x", "/admin", "/.env", "/v1/library/x",
                 "/docs/../openapi.json", "/metrics/", "/v1/adapters", "/v1/adapters/"):
        add("routes", f"GET {path}", req("GET", path))
    for route in ("/v1/predict", "/v1/learn", "/v1/jobs", "/v1/jobs/x", "/v1/library", "/v1/adapters/lora-x",
                  "/healthz", "/metrics", "/openapi.json", "/docs"):
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"):
            add("methods", f"{method} {route}", req(method, route, headers=A if method == "DELETE" else {}))
    add("methods", "method FOO", raw_case(http("FOO", "/v1/library")))
    add("methods", "method CONNECT", raw_case(http("CONNECT", "127.0.0.1:80")))
    add("methods", "lower-case method", raw_case(http("get", "/healthz")))

    # -- token
    for name, hdrs in (("none", {}), ("wrong", {"Authorization": "Bearer wrong"}),
                       ("Basic", {"Authorization": "Basic ZnV6ejp0b2tlbg=="}), ("empty", {"Authorization": ""}),
                       ("Bearer alone", {"Authorization": "Bearer"}), ("the token without Bearer",
                                                                      {"Authorization": srv.token or ""}),
                       ("a prefix of the token", {"Authorization": f"Bearer {(srv.token or 'x')[:-1]}"}),
                       ("the token and more", {"Authorization": f"Bearer {srv.token}x"}),
                       ("100 kB token", {"Authorization": "Bearer " + "x" * 100_000})):
        add("token", f"learn, token {name}", req("POST", "/v1/learn", json={"task": "sst2"}, headers=hdrs))
        add("token", f"delete, token {name}", req("DELETE", "/v1/adapters/lora-toy", headers=hdrs))
    add("token", "learn, token in the query", req("POST", f"/v1/learn?token={srv.token}", json={"task": "sst2"}))

    # -- broken HTTP
    for name, data in (("garbage", b"\x00\x01\x02 garbage\r\n\r\n"), ("HTTP/0.9", b"GET /healthz\r\n\r\n"),
                       ("HTTP/1.0", b"GET /healthz HTTP/1.0\r\n\r\n"), ("HTTP/2 preface on h1",
                                                                       b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
                       ("no Host", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"),
                       ("header without colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n"),
                       ("NUL in a header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
                       ("bad Content-Length", http("POST", "/v1/predict", {"Content-Length": "abc"}, b"{}")),
                       ("negative Content-Length", http("POST", "/v1/predict", {"Content-Length": "-1"}, b"{}")),
                       ("two Content-Lengths", http("POST", "/v1/predict", {"Content-Length": "2",
                                                                            "content-length": "5"}, b"{}")),
                       ("Content-Length and chunked", http("POST", "/v1/predict", {"Content-Length": "2",
                                                           "Transfer-Encoding": "chunked"}, b"{}")),
                       ("bad chunk size", http("POST", "/v1/predict", {"Transfer-Encoding": "chunked"},
                                               b"zz\r\n{}\r\n0\r\n\r\n")),
                       ("body shorter than declared", http("POST", "/v1/predict", {"Content-Length": "1000",
                                                           "Content-Type": "application/json"}, b'{"inputs": ["a"]}')),
                       ("Expect 100-continue", http("POST", "/v1/predict", {"Expect": "100-continue",
                                                    "Content-Type": "application/json"}, b'{"inputs": ["lovely"]}')),
                       ("pipelined requests", http("GET", "/healthz", {"Connection": "keep-alive"}) * 5)):
        add("broken HTTP", name, raw_case(data))
    add("broken HTTP", "a request, then the client half-closes", raw_case(http("GET", "/healthz"), half_close=True))
    add("broken HTTP", "pipelined requests, then the client half-closes",
        raw_case(http("GET", "/healthz", {"Connection": "keep-alive"}) * 5, half_close=True))

    # -- seeded random Unicode inputs, given a task or routed
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0x80, 0x2FF), (0x300, 0x36F), (0x590, 0x6FF), (0x200B, 0x202E),
              (0x4E00, 0x4FFF), (0xD800, 0xDFFF), (0xFFF0, 0xFFFF), (0x1F300, 0x1F6FF), (0xE0000, 0xE007F)]
    for i in range(random_inputs):
        def word() -> str:
            lo, hi = rng.choice(ranges)
            return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
        inputs: list[Any] = []
        task = rng.choice(["toy", "pairs", None])
        for _ in range(rng.randint(1, 4)):
            if task == "pairs" and rng.random() < 0.5:
                inputs.append({"first": word(), "second": word()})
            else:
                inputs.append(" ".join(word() for _ in range(rng.randint(1, 6)))
                              + (f" ||| {word()}" if rng.random() < 0.3 else ""))
        body = json.dumps({"inputs": inputs, **({"task": task} if task else {})}).encode()  # escapes surrogates
        add("random Unicode", f"#{i} ({task or 'routed'})", post_json("/v1/predict", body))
    return cases


def wait_jobs(client: httpx.Client, give_up_s: float = 600) -> list[dict[str, Any]]:
    """Let every accepted learn job finish (so the next case is not refused with 429 and the check sees the end)."""
    end = time.monotonic() + give_up_s
    while time.monotonic() < end:
        jobs = client.get("/v1/jobs").json()["jobs"]
        if all(j["state"] in ("succeeded", "failed") for j in jobs):
            return jobs
        time.sleep(0.3)
    raise RuntimeError("a learn job did not finish")


def _serve(base: Path, work: Path) -> tuple[Server, Path]:
    shutil.rmtree(work, ignore_errors=True)
    lib = copy_library(base, work / "lib")
    return Server(lib, work, TOKEN).start(), lib


def _finish(srv: Server, lib: Path, client: httpx.Client) -> dict[str, Any]:
    """After a stage: the jobs' ends, the server still answering, then stopped; its log; the library checked."""
    jobs = wait_jobs(client)
    healthy = client.get("/healthz").status_code == 200
    adapters = [a["name"] for a in client.get("/v1/library").json()["adapters"]]
    exit_code = srv.stop()
    log = srv.log.read_text(errors="replace")
    uploads_left = sorted(p.name for p in srv.tmp.iterdir() if p.name.startswith("alearn-upload-"))
    written_outside = sorted(str(p.relative_to(srv.cwd)) for p in srv.cwd.rglob("*"))
    check = verify(lib)
    out = {"server": {"answered_healthz_at_the_end": healthy, "exit_code_on_sigterm": exit_code,
                      "tracebacks_in_log": log.count("Traceback"),
                      "unexpected_errors_in_log": log.count("unexpected error on")},
           "jobs": [{k: j[k] for k in ("task", "state", "error", "dry_run", "adapter")} for j in jobs],
           "library": {"verify": check, "adapters_at_the_end": adapters, "uploads_left_in_temp": uploads_left,
                       "files_written_in_server_cwd": written_outside}}
    out["clean"] = healthy and check["ok"] and not uploads_left and not written_outside
    return out


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="tiny-random", help="backbone of the library (tiny-random, smollm2-135m)")
    ap.add_argument("--examples", type=int, default=100, help="schemathesis --max-examples per operation and pass")
    ap.add_argument("--random-inputs", type=int, default=300, help="random-Unicode predict requests")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/alearn-serve-fuzz"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve_fuzz.json")
    ap.add_argument("--skip-schemathesis", action="store_true")
    args = ap.parse_args()

    t_start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    base = build_library(args.work / f"base-{args.backbone}", args.backbone)
    tally = Tally()
    passes: list[dict[str, Any]] = []
    stages: dict[str, dict[str, Any]] = {}

    # stage 1: schemathesis, on its own server and copy of the library
    if not args.skip_schemathesis:
        srv, lib = _serve(base, args.work / "schemathesis")
        try:
            with srv.client() as client:
                for name, auth, incl, only in (("with-token", True, False, False), ("no-token", False, True, False),
                                               ("delete-with-token", True, True, True)):
                    p = schemathesis_pass(srv, name, srv.work, args.examples, args.seed, auth, incl, only)
                    for e in p.pop("entries"):
                        tally.add(f"schemathesis {name}", f"{e['request']['method']} {e['request']['url']}",
                                  e["response"]["status"], e["response"].get("content", {}).get("text") or "")
                    passes.append(p)
                    print(f"  {name}: {p['summary']}", flush=True)
                    wait_jobs(client)
                stages["schemathesis"] = _finish(srv, lib, client)
        finally:
            srv.stop()

    # stage 2: hostile requests by hand, on a fresh server and copy
    srv, lib = _serve(base, args.work / "hostile")
    accepted = 0
    not_sent: list[str] = []
    try:
        with srv.client() as client:
            cases = hostile_cases(srv, client, args.random_inputs, args.seed)
            print(f"$ {len(cases)} hostile requests", flush=True)
            for cat, name, send in cases:
                try:
                    status, body = send()
                except httpx.TransportError as exc:  # the server closed the connection without an answer
                    status, body = None, f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # noqa: BLE001 - httpx would not send it: a mistake of this script
                    not_sent.append(f"{cat}: {name}: {type(exc).__name__}: {exc}"[:300])
                    continue
                tally.add("hostile", name, status, body, cat)
                if status == 202:
                    accepted += 1
                    wait_jobs(client)
                if status is None or status >= 500 or "Traceback" in body:
                    print(f"  {'FAIL' if status else 'no response'} {cat}: {name!r}: {status} {body[:200]}",
                          flush=True)
            stages["hostile"] = _finish(srv, lib, client)
    finally:
        srv.stop()
    by_category: dict[str, dict[str, int]] = {}
    for c in tally.cases:
        d = by_category.setdefault(c["category"], {"requests": 0, "failures": 0})
        d["requests"] += 1
        d["failures"] += not c["ok"]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/serve_fuzz.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "backbone": args.backbone, "seed": args.seed, "examples_per_operation": args.examples,
        "schemathesis_version": _version("schemathesis"),
        "seconds": round(time.monotonic() - t_start, 1),
        **tally.out(),
        "schemathesis_passes": passes,
        "hostile": {"requests": len(tally.cases), "by_category": by_category, "learn_jobs_accepted": accepted,
                    "no_response": [c["case"] for c in tally.cases if c["status"] is None],
                    "not_sent_by_this_script": not_sent},
        "stages": stages,
        "hostile_cases": tally.cases,
    }
    result["clean"] = (result["5xx"] == 0 and result["tracebacks_in_bodies"] == 0
                       and all(st["clean"] for st in stages.values()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("responses", "by_class", "5xx", "tracebacks_in_bodies", "clean")}))
    print(f"hostile: {by_category}")
    for name, st in stages.items():
        print(f"{name}: server {st['server']}; library: {st['library']['verify']['output']}")
    print(f"written to {args.out}")
    sys.exit(0 if result["clean"] else 1)


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
