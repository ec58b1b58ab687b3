"""Rendering MIDI to audio: real SoundFont synthesis on tiny files written in the test."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import soundfile as sf
import symusic
from conftest import scale, write_midi

from classical_music import audio, soundfont
from classical_music.audio import sf2
from classical_music.cli import run
from classical_music.errors import UserError


def rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


@pytest.fixture(autouse=True)
def no_env_soundfont(monkeypatch):
    monkeypatch.delenv(soundfont.SOUNDFONT_ENV, raising=False)


def test_wav_is_44k_stereo_normalised_and_trimmed(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(8))  # last note ends at 1.975 s
    info = audio.render(mid, tmp_path / "a.wav")
    data, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == info["sample_rate"] == 44100
    assert data.ndim == 2 and data.shape[1] == 2
    peak = np.abs(data).max()
    assert peak <= audio.PEAK + 1e-4 and peak > 0.3  # under -1 dBFS, never clipped
    assert info["peak_dbfs"] <= -1.0 and abs(info["loudness_lufs"] - audio.TARGET_LUFS) < 1.0
    assert rms(data) > 0.01
    assert info["seconds"] == pytest.approx(len(data) / sr)
    # release, the hall's ring and a short tail, not seconds of silence
    assert 2.0 < info["seconds"] < 2.0 + sf2.RELEASE + 2.0
    assert np.abs(data[-20:]).max() < 1e-3  # faded out, no click at the cut
    assert info["render_seconds"] > 0 and os.path.isfile(info["soundfont"])
    assert sorted(os.listdir(tmp_path)) == ["a.mid", "a.wav"]  # no temporary left behind


def test_trailing_silence_in_the_midi_is_trimmed(tmp_path):
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(0, 480, 60, 90))
    track.controls.append(symusic.ControlChange(480 * 60, 7, 100))  # an event 30 s later
    score.tracks.append(track)
    info = audio.render(score, tmp_path / "s.wav")  # a Score works as well as a path
    assert info["seconds"] < 2.5


def test_mp3_is_written_and_decodes(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(8))
    info = audio.render(mid, tmp_path / "a.mp3")
    data, sr = sf.read(tmp_path / "a.mp3", dtype="float32")
    assert sr == 44100 and data.shape[1] == 2
    assert abs(len(data) / sr - info["seconds"]) < 0.15  # encoder padding only
    assert 0.5 < np.abs(data).max() <= 1.0
    assert rms(data) > 0.01


@pytest.mark.parametrize("lame", [True, False], ids=["lameenc", "libsndfile"])
def test_mp3_sounds_like_the_wav_with_either_encoder(tmp_path, monkeypatch, lame):
    if lame:
        pytest.importorskip("lameenc")
    else:  # the fallback when lameenc is not installed
        real = audio.encode.find_spec
        monkeypatch.setattr(audio.encode, "find_spec", lambda name: None if name == "lameenc" else real(name))
    mid = write_midi(tmp_path / "a.mid", scale(6))
    audio.render(mid, [tmp_path / "a.wav", tmp_path / "a.mp3"])
    wav, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    mp3, _ = sf.read(tmp_path / "a.mp3", dtype="float32")
    # MP3 decoders add a start-up delay; align on the best lag before comparing
    a, b = wav[:, 0], mp3[:, 0]
    lag = int(np.argmax(np.correlate(b[:20000], a[:4000], mode="valid")))
    n = min(len(a), len(b) - lag)
    assert 0 <= lag < 4000 and n > 0.9 * len(a)
    assert np.corrcoef(a[:n], b[lag : lag + n])[0, 1] > 0.98


def test_one_synthesis_several_files(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(4))
    info = audio.render(mid, [tmp_path / "a.wav", tmp_path / "a.mp3"])
    assert info["paths"] == [str(tmp_path / "a.wav"), str(tmp_path / "a.mp3")]
    assert sf.info(tmp_path / "a.wav").format == "WAV" and sf.info(tmp_path / "a.mp3").format == "MP3"
    # permissions follow the umask like any file the user makes (a mkstemp name would be 0600)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("a.wav", "a.mp3"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mid", "a.mp3", "a.wav"]


def test_sustain_pedal_makes_a_short_note_ring(tmp_path):
    note = [(60, 0.0, 0.2, 100)]
    dry = audio.render(write_midi(tmp_path / "dry.mid", note), tmp_path / "dry.wav", reverb=0)
    wet = audio.render(write_midi(tmp_path / "wet.mid", note, pedals=[(0.0, 3.0)]), tmp_path / "wet.wav", reverb=0)
    assert wet["seconds"] > dry["seconds"] + 1.0
    d, sr = sf.read(tmp_path / "dry.wav", dtype="float32")
    w, _ = sf.read(tmp_path / "wet.wav", dtype="float32")
    # both are loudness-normalised, so compare the level one to two seconds in
    assert rms(w[sr:2 * sr]) > 10 * max(rms(d[sr:2 * sr]), 1e-4)


def test_other_sample_rate(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(4))
    audio.render(mid, tmp_path / "a.wav", sample_rate=22050)
    assert sf.info(tmp_path / "a.wav").samplerate == 22050


def test_parallel_chunks_sum_to_the_single_render(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.sf2, "PARALLEL_MIN_SECONDS", 0.0)
    notes = scale(24, step=0.2) + [(p, 1.0, 3.0, 70) for p in (36, 43, 48)]  # chords across the split
    mid = write_midi(tmp_path / "a.mid", notes, pedals=[(0.9, 2.5), (3.0, 4.0)])
    one = audio.render(mid, tmp_path / "one.wav", workers=1, reverb=0)
    two = audio.render(mid, tmp_path / "two.wav", workers=2, reverb=0)
    assert one["workers"] == 1 and two["workers"] == 2
    a, _ = sf.read(tmp_path / "one.wav", dtype="float32")
    b, _ = sf.read(tmp_path / "two.wav", dtype="float32")
    # Synthesis is linear, so the chunks sum to the whole. But the engine starts notes on 64-sample
    # blocks with float timing, so a note may start one block (1.3 ms) apart, which shifts the peak
    # and so the normalisation gain: compare loudness envelopes after matching the gain.
    assert abs(len(a) - len(b)) < 0.1 * 44100
    n = min(len(a), len(b)) // 4410 * 4410
    env_a = np.sqrt(np.square(a[:n]).reshape(-1, 4410, 2).mean(axis=(1, 2)))  # 0.1 s frames
    env_b = np.sqrt(np.square(b[:n]).reshape(-1, 4410, 2).mean(axis=(1, 2)))
    gain = float(env_a @ env_b / (env_b @ env_b))
    assert 0.8 < gain < 1.25
    assert np.abs(env_a - gain * env_b).max() < 0.05 * env_a.max()
    head = slice(0, 44100)  # the first second is all in the first chunk: same samples up to gain
    assert np.abs(a[head] - gain * b[head]).max() < 0.01


def test_resample_keeps_a_sine_and_lines_up_pieces():
    t = np.arange(4800) / 48000
    x = np.stack([np.sin(2 * np.pi * 1000 * t)] * 2, 1).astype(np.float32)
    y = sf2.resample(x, 147, 160)
    t2 = np.arange(len(y)) / 44100
    assert len(y) == 4410 and y.dtype == np.float32
    assert np.abs(y[200:-200, 0] - np.sin(2 * np.pi * 1000 * t2[200:-200])).max() < 1e-4
    assert sf2.resample(np.ones((12345, 2), np.float32), 147, 320).shape == (-(-12345 * 147 // 320), 2)  # ceil, as documented
    # a piece starting at a multiple of `down` (with LEAD samples of silence before its first
    # sound, as _chunks makes them) resamples to the matching slice of the whole, at every rate
    noise = np.random.default_rng(0).standard_normal((24000, 2)).astype(np.float32) * 0.1
    for rate in (8000, 11025, 22050, 44100, 96000):
        up, down = sf2.rate_ratio(rate)
        cut = down * (9000 // down)
        head, tail = noise.copy(), noise.copy()
        head[cut + sf2.LEAD:], tail[:cut + sf2.LEAD] = 0, 0
        whole = sf2.resample(noise, up, down)
        glued = sf2.resample(head, up, down)
        part = sf2.resample(tail[cut:], up, down)
        glued[cut // down * up:] += part
        assert np.abs(glued - whole).max() < 1e-5, rate
        # with too little silence before the cut the filter's reach is lost: the test can tell
        head, tail = noise.copy(), noise.copy()
        head[cut + 8:], tail[:cut + 8] = 0, 0
        short = sf2.resample(head, up, down)
        short[cut // down * up:] += sf2.resample(tail[cut:], up, down)
        assert np.abs(short - whole).max() > 1e-4, rate


def test_soundfont_discovery(tmp_path, monkeypatch):
    bundled = soundfont.pretty_midi_soundfont()
    assert bundled is not None  # the pip-only fallback exists
    monkeypatch.setattr(soundfont, "SYSTEM_SOUNDFONTS", ())
    assert soundfont.find_soundfont() == bundled
    copy = tmp_path / "copy.sf2"
    copy.write_bytes(bundled.read_bytes())
    monkeypatch.setenv(soundfont.SOUNDFONT_ENV, str(copy))
    assert soundfont.find_soundfont() == copy
    assert soundfont.find_soundfont(bundled) == bundled  # an explicit one wins over the environment
    monkeypatch.setenv(soundfont.SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(UserError, match="CLASSICAL_MUSIC_SOUNDFONT"):
        soundfont.find_soundfont()


def _bad_inputs(tmp_path):
    good = write_midi(tmp_path / "in" / "good.mid", scale(4))
    empty = write_midi(tmp_path / "in" / "empty.mid", [])
    garbage = tmp_path / "in" / "garbage.mid"
    garbage.write_bytes(b"MThd" + b"\x00" * 40)
    not_sf = tmp_path / "in" / "notes.sf2"
    not_sf.write_text("not a soundfont")
    truncated = tmp_path / "in" / "truncated.sf2"  # right header, broken body: the engine refuses it
    truncated.write_bytes(soundfont.pretty_midi_soundfont().read_bytes()[:200_000])
    out = tmp_path / "out"
    out.mkdir()
    return [
        (dict(midi=tmp_path / "in" / "missing.mid", out_path=out / "a.wav"), "not found"),
        (dict(midi=garbage, out_path=out / "a.wav"), "cannot read MIDI"),
        (dict(midi=empty, out_path=out / "a.wav"), "no notes"),
        (dict(midi=good, out_path=out / "a.ogg"), r"\.wav or \.mp3"),
        (dict(midi=good, out_path=out / "nowhere" / "a.wav"), "does not exist"),
        (dict(midi=good, out_path=out / "a.wav", soundfont=tmp_path / "missing.sf2"), "not found"),
        (dict(midi=good, out_path=out / "a.wav", soundfont=not_sf), "not an SF2"),
        (dict(midi=good, out_path=out / "a.wav", soundfont=truncated), "cannot render with SoundFont"),
        (dict(midi=good, out_path=out / "a.wav", sample_rate=44101), "not supported"),
        (dict(midi=good, out_path=out / "a.mp3", sample_rate=96000), "MP3 cannot"),
    ], out


def test_bad_inputs_raise_user_error_and_write_nothing(tmp_path):
    cases, out = _bad_inputs(tmp_path)
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            audio.render(**kwargs)
        assert os.listdir(out) == [], kwargs


def test_cli_exit_codes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    audio.add_parser(parser.add_subparsers(dest="command"))
    mid = write_midi(tmp_path / "a.mid", scale(4))

    args = parser.parse_args(["render", str(mid), "--output", str(tmp_path / "a.mp3")])
    assert run(args.func, args) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "a.mp3").is_file()

    args = parser.parse_args(["render", str(tmp_path / "missing.mid")])
    assert run(args.func, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1

    args = parser.parse_args(["render", str(mid)])  # default output: IN.wav
    assert run(args.func, args) == 0 and (tmp_path / "a.wav").is_file()


def test_a_failing_parallel_render_leaves_no_file_or_worker(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(audio.sf2, "PARALLEL_MIN_SECONDS", 0.0)
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(soundfont.pretty_midi_soundfont().read_bytes()[:200_000])
    mid = write_midi(tmp_path / "a.mid", scale(24, step=0.2))
    with pytest.raises(UserError, match="cannot render"):
        audio.render(mid, tmp_path / "a.wav", soundfont=broken, workers=2)
    assert not (tmp_path / "a.wav").exists()
    assert not multiprocessing.active_children()


def test_two_notes_an_hour_apart_render_in_bounded_memory(tmp_path):
    """Issue 27: a tiny MIDI with notes an hour apart took 6.5 GB to render to MP3 (an hour of
    silence synthesised, then copied to float64). Silences are now shortened and encoding is chunked."""
    import tracemalloc

    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(0, 480, 60, 90))
    track.notes.append(symusic.Note(480 * 2 * 3600, 480, 64, 90))  # an hour later
    score.tracks.append(track)
    mid = tmp_path / "hour.mid"
    score.dump_midi(str(mid))
    assert mid.stat().st_size < 64
    tracemalloc.start()
    try:
        info = audio.render(mid, [tmp_path / "hour.wav", tmp_path / "hour.mp3"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info["seconds"] < 40  # the silence is shortened to 30 s, as for tokenizing
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"
    data, sr = sf.read(tmp_path / "hour.wav", dtype="float32")
    starts = np.flatnonzero(np.abs(data).max(axis=1) > 0.05)
    assert starts[-1] / sr > 30.5  # both notes are there, 30 s of silence between
