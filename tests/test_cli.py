"""The command line's own behaviour: a mistyped flag is explained by the sub-command it was given to."""

import subprocess
import sys
from pathlib import Path

import pytest

from classical_music import cli
from classical_music import generate as generate_mod
from classical_music import train as train_mod

REPO = Path(__file__).resolve().parents[1]


def usage_and_error(capsys, call):
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    err = capsys.readouterr().err
    return err[: err.index("error:")], err[err.index("error:"):].strip()


@pytest.mark.parametrize("argv, usage, hint", [
    (["generate", "--seconsd", "5"], "usage: classical-music generate", "--seconsd: did you mean --seconds?"),
    (["train", "--batchsize", "8"], "usage: classical-music train", "--batchsize: did you mean --batch_size?"),
    (["data", "prepare", "x", "--workrs", "2"], "usage: classical-music data prepare",
     "--workrs: did you mean --workers?"),
    (["train", "--max-steps", "8"], "usage: classical-music train", "--max-steps: did you mean --max_steps?"),
])
def test_a_typo_shows_the_sub_commands_usage_and_the_nearest_flag(capsys, argv, usage, hint):
    head, message = usage_and_error(capsys, lambda: cli.main(argv))
    assert head.startswith(usage)
    assert message.startswith("error: unrecognized arguments:") and hint in message
    assert len(message.splitlines()) == 1


def test_the_root_doors_suggest_too(capsys):
    head, message = usage_and_error(capsys, lambda: train_mod.main(["--epohcs", "3"]))
    assert head.startswith("usage: train.py") and "--epohcs: did you mean --epochs?" in message
    head, message = usage_and_error(capsys, lambda: generate_mod.main(["--tempreature", "2"]))
    assert head.startswith("usage: generate.py") and "did you mean --temperature?" in message
    # nothing near: the plain message, no guess
    _, message = usage_and_error(capsys, lambda: generate_mod.main(["--zzzzzz"]))
    assert message == "error: unrecognized arguments: --zzzzzz"


def test_the_repo_root_door_from_a_shell():
    proc = subprocess.run([sys.executable, "generate.py", "--seed", "1", "--outptu", "x.mid"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: generate.py")
    assert proc.stderr.strip().splitlines()[-1].endswith("(--outptu: did you mean --output?)")
