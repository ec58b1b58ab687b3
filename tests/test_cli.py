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


# --- issue 27 item 15: one behaviour across commands ------------------------------------------

def test_render_and_evaluate_make_missing_output_folders_as_generate_does(tmp_path, capsys):
    from classical_music import cli as app
    from conftest import scale, write_midi

    mid = write_midi(tmp_path / "a.mid", scale(8))
    assert app.main(["render", str(mid), "--output", str(tmp_path / "new" / "deeper" / "a.wav"), "--workers", "1"]) == 0
    assert (tmp_path / "new" / "deeper" / "a.wav").stat().st_size > 1000
    out = tmp_path / "scores" / "r.json"
    assert app.main(["evaluate", str(mid), "--json", str(out), "--no_progress", "--threads", "1"]) == 0
    assert out.is_file()
    # a failure leaves no empty folder behind, and a file in the way is one line
    assert app.main(["render", str(tmp_path / "missing.mid"), "--output", str(tmp_path / "none" / "a.wav")]) == 2
    assert not (tmp_path / "none").exists()
    assert app.main(["render", str(mid), "--output", str(mid / "x.wav")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_num_samples_is_capped_with_a_message(tmp_path, capsys):
    from classical_music import cli as app
    from classical_music.generate.config import MAX_SAMPLES

    assert app.main(["generate", "--num_samples", str(MAX_SAMPLES + 1), "--output", str(tmp_path / "o.mid")]) == 2
    err = capsys.readouterr().err
    assert f"between 1 and {MAX_SAMPLES}" in err and "another --seed" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_large_wav_renamed_mid_is_called_a_wav(tmp_path):
    from classical_music.notes import MAX_FILE_BYTES, MidiReadError, load_score

    wav = tmp_path / "song.mid"
    with open(wav, "wb") as f:
        f.write(b"RIFF\xff\xff\xff\x7fWAVEfmt ")
        f.truncate(MAX_FILE_BYTES + 1024)  # sparse: 16 MB on disk costs nothing
    with pytest.raises(MidiReadError) as e:
        load_score(wav)
    assert "WAV" in str(e.value) and "too large" in str(e.value)
    big_midi = tmp_path / "big.mid"
    with open(big_midi, "wb") as f:
        f.write(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
        f.truncate(MAX_FILE_BYTES + 1024)
    with pytest.raises(MidiReadError, match=r"^file too large"):
        load_score(big_midi)
