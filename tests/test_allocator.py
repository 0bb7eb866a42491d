"""The command line starts itself again with tcmalloc where the system has it (``allocator.py``)."""

import os
import subprocess
import sys

import pytest

from adaptive_learner import allocator as A


@pytest.fixture
def libdir(tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    return [str(tmp_path)]


def test_a_training_command_is_relaunched_with_tcmalloc_preloaded_before_what_was_there(libdir):
    env = A.relaunch_env(["bench", "seed"], {"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}, "linux", libdir)
    assert env["LD_PRELOAD"] == f"{libdir[0]}/libtcmalloc_minimal.so.4:/opt/other.so"
    assert env[A.ENV] == "tcmalloc" and env["PATH"] == "/bin"  # marked, so the relaunched process goes on
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40


@pytest.mark.parametrize("argv, environ, platform", [
    (["learn"], {A.ENV: "system"}, "linux"),  # the user's choice
    (["learn"], {A.ENV: "tcmalloc"}, "linux"),  # relaunched already
    (["learn"], {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "linux"),  # another allocator chosen
    (["learn"], {}, "darwin"),
    (["learn", "--help"], {}, "linux"), ([], {}, "linux"), (["data", "ls"], {}, "linux"),  # not worth it
])
def test_no_relaunch_where_the_user_chose_it_was_done_or_is_not_worth_it(libdir, argv, environ, platform):
    assert A.relaunch_env(argv, environ, platform, libdir) is None


def test_no_relaunch_without_the_library(tmp_path):
    assert A.find_tcmalloc([str(tmp_path)]) is None
    assert A.relaunch_env(["learn"], {}, "linux", [str(tmp_path)]) is None


@pytest.mark.skipif(A.find_tcmalloc() is None or sys.platform != "linux", reason="tcmalloc is not installed")
def test_the_relaunched_process_runs_on_tcmalloc():
    code = "from adaptive_learner.allocator import relaunch_with_tcmalloc as r; r(['learn'], 'adaptive_learner.allocator')"
    env = {k: v for k, v in os.environ.items() if k not in (A.ENV, "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tcmalloc"
    env[A.ENV] = "system"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == ""  # not relaunched: nothing printed
