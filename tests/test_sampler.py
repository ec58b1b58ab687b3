"""The sampler path: a tiny SFZ instrument of synthetic samples written by the test, played by
pysfizz through render(); the pedal, key-up damping and release triggers; which instrument plays."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import write_midi

from classical_music import audio, piano, soundfont
from classical_music.audio import instrument, sampler
from classical_music.errors import UserError

pytest.importorskip("pysfizz")
RATE = 48000


def band(x, rate, lo, hi):
    """Energy of the mono mix between lo and hi Hz."""
    m = x.mean(axis=1) if x.ndim == 2 else x
    spec = np.abs(np.fft.rfft(m * np.hanning(len(m)))) ** 2
    f = np.fft.rfftfreq(len(m), 1 / rate)
    return float(spec[(f >= lo) & (f < hi)].sum())


def centroid(x, rate):
    m = x.mean(axis=1)
    spec = np.abs(np.fft.rfft(m * np.hanning(len(m)))) ** 2
    f = np.fft.rfftfreq(len(m), 1 / rate)
    return float((spec * f).sum() / spec.sum())


def level(x, a, b):
    """dB level of x between a and b seconds (the trimmed end counts as silence)."""
    seg = x[int(a * RATE): int(b * RATE)]
    return 10 * np.log10(np.sum(np.square(seg)) / (max(int(b * RATE) - int(a * RATE), 1) * 2) + 1e-20)


@pytest.fixture
def tiny_piano(tmp_path):
    return make_tiny_piano(tmp_path / "tiny")


def make_tiny_piano(folder):
    """Two velocity layers of a 440 Hz tone (soft: nearly pure; loud: rich in harmonics), 8 s of
    slow decay each, and a 3 kHz click as the release (damper) sample."""
    (folder / "s").mkdir(parents=True)
    t = np.arange(8 * RATE) / RATE
    env = np.exp(-t * 0.7)  # ~6 dB/s
    soft = np.sin(2 * np.pi * 440 * t) * env * 0.3
    loud = sum(np.sin(2 * np.pi * 440 * k * t) / k for k in range(1, 8)) * env * 0.3
    for name, x in (("soft", soft), ("loud", loud)):
        sf.write(folder / "s" / f"{name}.wav", np.stack([x, x], 1).astype(np.float32), RATE, subtype="PCM_16")
    tc = np.arange(int(0.1 * RATE)) / RATE
    click = np.sin(2 * np.pi * 3000 * tc) * np.exp(-tc * 40) * 0.5
    sf.write(folder / "s" / "rel.wav", np.stack([click, click], 1).astype(np.float32), RATE, subtype="PCM_16")
    sfz = folder / "tiny.sfz"
    sfz.write_text("<control>\ndefault_path=s/\n<global>\nampeg_release=0.1\n"
                   "<group> lovel=1 hivel=64\n<region> sample=soft.wav lokey=48 hikey=84 pitch_keycenter=69\n"
                   "<group> lovel=65 hivel=127\n<region> sample=loud.wav lokey=48 hikey=84 pitch_keycenter=69\n"
                   "<group> trigger=release\n<region> sample=rel.wav lokey=48 hikey=84 pitch_keycenter=69 pitch_keytrack=0\n")
    return sfz


def play(tmp_path, sfz, notes, pedals=(), name="x", **kw):
    mid = write_midi(tmp_path / f"{name}.mid", notes, pedals=pedals)
    info = audio.render(mid, tmp_path / f"{name}.wav", piano=sfz, sample_rate=RATE, reverb=kw.pop("reverb", 0), **kw)
    x, rate = sf.read(tmp_path / f"{name}.wav", dtype="float32")
    return info, x


def test_sampler_plays_the_sfz_at_pitch_and_is_mastered(tmp_path, tiny_piano):
    info, x = play(tmp_path, tiny_piano, [(69, 0.0, 1.0, 50), (81, 1.5, 1.0, 50)])
    assert info["backend"] == "sfz" and info["soundfont"] == str(tiny_piano) and info["workers"] == 1
    a4, a5 = x[int(0.1 * RATE): int(0.9 * RATE)], x[int(1.6 * RATE): int(2.4 * RATE)]
    assert band(a4, RATE, 420, 460) > 100 * band(a4, RATE, 860, 900)  # the sample itself
    assert band(a5, RATE, 860, 900) > 100 * band(a5, RATE, 420, 460)  # an octave up: pitch-shifted
    assert np.abs(x).max() <= audio.PEAK + 1e-4 and info["peak_dbfs"] <= -1.0
    assert abs(info["loudness_lufs"] - audio.TARGET_LUFS) < 1.0


def test_velocity_picks_the_layer(tmp_path, tiny_piano):
    _, soft = play(tmp_path, tiny_piano, [(69, 0.0, 0.6, 30)], name="soft")
    _, loud = play(tmp_path, tiny_piano, [(69, 0.0, 0.6, 110)], name="loud")
    half = slice(0, RATE // 2)
    assert centroid(loud[half], RATE) > 1.5 * centroid(soft[half], RATE)


def test_pedal_rings_on_and_key_up_damps(tmp_path, tiny_piano):
    note = [(69, 0.0, 0.5, 80)]
    _, dry = play(tmp_path, tiny_piano, note, name="dry")
    _, wet = play(tmp_path, tiny_piano, note, pedals=[(0.0, 3.0)], name="wet")
    assert level(dry, 0.8, 0.9) < level(dry, 0.4, 0.5) - 30  # 0.3 s after the key-up it is damped
    assert level(wet, 1.5, 1.6) > level(dry, 1.5, 1.6) + 10  # 1 s after the key-up the pedal holds it
    assert level(wet, 1.5, 1.6) > level(wet, 0.4, 0.5) - 12  # still ringing, only its own decay
    # the release sample (a 3 kHz click) sounds at the key-up without the pedal, at the pedal's lift with it
    click = slice(int(0.5 * RATE), int(0.56 * RATE))
    assert band(dry[click], RATE, 2800, 3200) > 10 * band(wet[click], RATE, 2800, 3200)


def test_a_warm_synth_is_reused(tmp_path, tiny_piano):
    play(tmp_path, tiny_piano, [(69, 0.0, 0.3, 80)], name="a")
    key = next(k for k in sampler.POOL.idle if k[0] == str(tiny_piano) and k[1] == RATE)
    first = sampler.POOL.idle[key][0]
    _, a = play(tmp_path, tiny_piano, [(69, 0.0, 0.3, 80)], name="b")
    assert sampler.POOL.idle[key][0] is first  # no second load
    _, b = play(tmp_path, tiny_piano, [(69, 0.0, 0.3, 80)], name="c")
    assert np.allclose(a, b, atol=1e-4)  # nothing left ringing from the piece before


def test_hall_reverb_adds_a_tail(tmp_path, tiny_piano):
    note = [(69, 0.0, 0.2, 80)]
    dry, _ = play(tmp_path, tiny_piano, note, name="d", reverb=0)
    hall, _ = play(tmp_path, tiny_piano, note, name="h", reverb=1)
    assert hall["seconds"] > dry["seconds"] + 0.5 and hall["reverb"] == 1.0
    with pytest.raises(UserError, match="--reverb"):
        play(tmp_path, tiny_piano, note, name="bad", reverb=1.5)


def test_instrument_choice_and_fallback(tmp_path, tiny_piano, monkeypatch, capsys):
    instrument._told.clear()
    fallback = instrument.find_instrument()  # nothing installed in this test's cache
    assert fallback.kind == "sf2"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "piano install" in err and "TimGM6mb" in err
    instrument.find_instrument()
    assert capsys.readouterr().err == ""  # said once per process
    assert instrument.find_instrument(piano=tiny_piano).kind == "sfz"
    monkeypatch.setenv(instrument.PIANO_ENV, str(tiny_piano))
    assert instrument.find_instrument().path == tiny_piano
    assert instrument.find_instrument(soundfont=soundfont.pretty_midi_soundfont()).kind == "sf2"  # explicit wins
    for kwargs, message in [(dict(piano=tmp_path / "none.sfz"), "not found"),
                            (dict(piano=soundfont.pretty_midi_soundfont()), "not an SFZ"),
                            (dict(piano=tiny_piano, soundfont=soundfont.pretty_midi_soundfont()), "one of them")]:
        with pytest.raises(UserError, match=message):
            instrument.find_instrument(**kwargs)
    empty = tmp_path / "empty.sfz"
    empty.write_text("// nothing here\n")
    with pytest.raises(UserError, match="no playable regions"):
        play(tmp_path, empty, [(69, 0.0, 0.3, 80)], name="e")
    assert not (tmp_path / "e.wav").exists()


def test_render_cli_takes_piano_and_reverb(tmp_path, tiny_piano, capsys):
    from classical_music.cli import main

    mid = write_midi(tmp_path / "a.mid", [(69, 0.0, 0.5, 80)])
    assert main(["render", str(mid), "-o", str(tmp_path / "a.mp3"), "--piano", str(tiny_piano), "--reverb", "0.5"]) == 0
    assert "tiny" in capsys.readouterr().out and sf.info(tmp_path / "a.mp3").format == "MP3"
    assert main(["render", str(mid), "--piano", str(tiny_piano), "--reverb", "2"]) == 2
    assert "--reverb" in capsys.readouterr().err
    assert piano.CREDIT.split(",")[0] in _help(["render", "--help"])


def _help(argv):
    import contextlib
    import io

    from classical_music.cli import build_parser

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    return " ".join(buf.getvalue().split())


def test_a_fresh_synth_plays_every_sample_whole(tmp_path):
    """sfizz streams each sample past its first part in the background: a new synth (every
    `render`) must not play a note from a sample not yet streamed in (sampler._stream_in)."""
    folder = tmp_path / "many"
    (folder / "s").mkdir(parents=True)
    t = np.arange(6 * RATE) / RATE
    regions = []
    for k in range(48):  # a sample per key, each long enough to be streamed rather than preloaded
        x = np.sin(2 * np.pi * 110 * 2 ** (k / 12) * t) * np.exp(-t * 0.3) * 0.3
        # FLAC, as the Salamander grand's: decoding makes streaming slow enough to fall behind
        sf.write(folder / "s" / f"k{k}.flac", np.stack([x, x], 1).astype(np.float32), RATE, subtype="PCM_16")
        regions.append(f"<region> sample=k{k}.flac key={45 + k}")
    sfz = folder / "many.sfz"
    sfz.write_text("<control>\ndefault_path=s/\n<global>\nampeg_release=0.1\n<group>\n" + "\n".join(regions) + "\n")
    notes = [(45 + k, 0.02 * k, 3.0, 80) for k in range(48)]  # all struck within a second, held 3 s
    mid = write_midi(tmp_path / "many.mid", notes)
    perf = audio.performance(audio.open_score(mid))
    renders = []
    for _ in range(3):
        sampler.POOL = type(sampler.POOL)()  # a new synth, as a new process has
        renders.append(np.concatenate(list(sampler.render_blocks(perf, sfz, RATE))))
    again = np.concatenate(list(sampler.render_blocks(perf, sfz, RATE)))  # the same synth, all loaded
    assert all(np.array_equal(r, again) for r in renders)
    # and each note still sounds at 2.5 s, its sample's streamed part
    late = again[int(2.5 * RATE):int(2.6 * RATE), 0]
    assert np.sqrt((late ** 2).mean()) > 0.05
