import argparse
import json
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from classical_music import cli, compare
from classical_music.compare import (FEATURE_NAMES, compare_sets, features, kl_divergence, load_notes,
                                     overlap_area)

from conftest import write_midi


def piece(seed, n=120, shift=0, soft=False):
    """A random piece: melody 62-80 over a sparse bass 57-61 (under two octaves), velocities 60-110."""
    rng = np.random.default_rng(seed)
    notes, t = [], 0.0
    for _ in range(n):
        dur = float(rng.choice([0.125, 0.25, 0.5]))
        vel = int(rng.integers(60, 111))
        if soft:
            vel = max(1, vel // 4)  # 15-27: clearly apart from 60-110
        notes.append((int(rng.integers(62, 81)) + shift, t, dur, vel))
        if rng.random() < 0.25:
            notes.append((int(rng.integers(57, 62)) + shift, t, dur * 2, vel))
        t += dur
    return notes


@pytest.fixture
def sets(tmp_path):
    ref, low = tmp_path / "ref", tmp_path / "low"
    for i in range(4):
        write_midi(ref / f"p{i}.mid", piece(i))
        write_midi(low / f"p{i}.mid", piece(i, shift=-24, soft=True))
    return ref, low


def parser():
    p = argparse.ArgumentParser()
    compare.add_parser(p.add_subparsers(dest="command"))
    return p


def run(*argv):
    args = parser().parse_args(["compare", *map(str, argv), "--no_progress"])
    return cli.run(args.func, args)


# --- OA and KL ----------------------------------------------------------------------------------

def test_overlap_and_kl_of_identical_samples():
    x = np.random.default_rng(0).normal(size=5000)
    assert overlap_area(x, x) == pytest.approx(1.0, abs=1e-6)
    assert kl_divergence(x, x) == pytest.approx(0.0, abs=1e-9)
    pc = np.arange(1000) % 12
    assert overlap_area(pc, pc, "pitch_class") == pytest.approx(1.0, abs=1e-6)
    assert kl_divergence(pc, pc, "pitch_class") == pytest.approx(0.0, abs=1e-9)


def test_overlap_of_disjoint_samples_is_zero_and_kl_positive():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 3000), rng.normal(50, 1, 3000)
    assert overlap_area(a, b) < 1e-3
    assert kl_divergence(a, b) > 10  # bounded only by the epsilon
    assert overlap_area([0, 1, 2] * 10, [5, 6, 7] * 10, "pitch_class") == 0.0
    c = rng.normal(0.5, 1, 3000)
    assert 0.5 < overlap_area(a, c) < 0.95
    assert 0 < kl_divergence(a, c) < 1


def test_log_features_are_estimated_on_log_seconds():
    rng = np.random.default_rng(2)
    a = 10 ** rng.normal(-1, 0.2, 2000)
    assert overlap_area(a, a * 100, "ioi") < 1e-3  # two decades apart, narrow bumps
    assert overlap_area(a, a * 1.01, "duration") > 0.95


@settings(max_examples=25, deadline=None)
@example([0.0], [5e-324])  # a few ulps apart: the grid's step was 0 and OA NaN
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=50),
       st.lists(st.floats(-100, 100), min_size=1, max_size=50))
def test_overlap_is_symmetric_and_bounded(a, b):
    oa = overlap_area(a, b)
    assert -1e-9 <= oa <= 1 + 1e-9
    assert oa == pytest.approx(overlap_area(b, a), abs=1e-9)
    assert kl_divergence(a, b) >= 0


# --- notes and features -------------------------------------------------------------------------

def test_pedal_folding_extends_durations_until_lift_or_restrike(tmp_path):
    path = write_midi(tmp_path / "pedal.mid",
                      [(60, 0.0, 0.5, 80), (64, 0.0, 0.5, 80), (64, 1.0, 0.25, 80), (67, 3.0, 0.5, 80)],
                      pedals=[(0.25, 2.0)])
    n = load_notes(path)
    got = {(int(p), round(float(on), 3)): round(float(off - on), 3) for p, on, off in zip(n.pitch, n.onset, n.offset)}
    assert got[(60, 0.0)] == 2.0  # held by the pedal until it lifts
    assert got[(64, 0.0)] == 1.0  # cut by the re-strike of the same key
    assert got[(64, 1.0)] == 1.0  # released at 1.25 with the pedal down: lasts to 2.0
    assert got[(67, 3.0)] == 0.5  # pedal up: unchanged
    dry = load_notes(write_midi(tmp_path / "dry.mid", [(60, 0.0, 0.5, 80)]))
    assert features([n])["duration"].max() > features([dry])["duration"].max()


def test_feature_definitions(tmp_path):
    # a C major chord every half second for 4 s, each held 0.25 s
    chords = [(p, i * 0.5, 0.25, 90) for i in range(8) for p in (60, 64, 67)]
    f = features([load_notes(write_midi(tmp_path / "c.mid", chords))])
    assert set(f) == set(FEATURE_NAMES)
    assert sorted(set(f["pitch_class"].tolist())) == [0, 4, 7]
    assert np.allclose(f["ioi"], 0.5)  # chord notes share an onset: one IOI per chord
    assert np.allclose(f["note_density"], 6.0)  # two chords of three notes per second
    assert set(f["polyphony"].tolist()) == {0, 3}  # time grid: sounding half the time, silent half
    assert abs(np.mean(f["polyphony"] == 3) - 0.5) < 0.05


# --- sets ---------------------------------------------------------------------------------------

def test_set_against_itself_scores_one(sets):
    ref, _ = sets
    r = compare_sets(ref, ref)
    assert r["mean_overlap_area"] == pytest.approx(1.0, abs=1e-6)
    for f in r["features"].values():
        assert f["overlap_area"] == pytest.approx(1.0, abs=1e-6)
        assert f["kl"] == pytest.approx(0.0, abs=1e-6)


def test_lower_and_softer_set_scores_clearly_lower(sets):
    ref, low = sets
    r = compare_sets(low, ref)
    f = r["features"]
    assert f["pitch"]["overlap_area"] < 0.3
    assert f["velocity"]["overlap_area"] < 0.3
    assert f["pitch_class"]["overlap_area"] > 0.99  # octaves keep the pitch classes
    assert f["ioi"]["overlap_area"] > 0.99  # same rhythm
    assert r["mean_overlap_area"] < 0.85
    assert f["pitch"]["kl"] > 1 and f["velocity"]["kl"] > 1


def test_bad_files_are_skipped_with_reasons(tmp_path, sets):
    ref, _ = sets
    bad = tmp_path / "mixed"
    write_midi(bad / "good.mid", piece(9))
    (bad / "random.mid").write_bytes(np.random.default_rng(0).bytes(2000))
    (bad / "empty.mid").write_bytes(b"")
    write_midi(bad / "no_notes.mid", [])
    write_midi(bad / "drums.mid", piece(3, n=10), drum=True)
    (bad / "notes.txt").write_text("not a MIDI file, not even looked at")
    r = compare_sets(bad, ref)
    assert r["generated"]["files"] == 1
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in r["generated"]["skipped"]}
    assert set(reasons) == {"random.mid", "empty.mid", "no_notes.mid", "drums.mid"}
    assert reasons["empty.mid"] == "empty file"
    assert reasons["no_notes.mid"] == "no notes"
    assert reasons["drums.mid"] == "drum tracks only"
    assert reasons["random.mid"]  # the parser's complaint, whatever it is
    assert r["reference"]["skipped"] == [] and r["reference"]["files"] == 4


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_writes_json_and_self_contained_report(tmp_path, sets, capsys):
    ref, low = sets
    out_json, out_html = tmp_path / "out" / "r.json", tmp_path / "out" / "r.html"
    assert run(low, ref, "--json", out_json, "--report", out_html) == 0
    r = json.loads(out_json.read_text())
    assert list(r["features"]) == list(FEATURE_NAMES)
    assert FEATURE_NAMES == ("pitch_class", "pitch", "ioi", "duration", "velocity", "note_density", "polyphony")
    for f in r["features"].values():
        assert isinstance(f["overlap_area"], float) and isinstance(f["kl"], float)
    assert isinstance(r["mean_overlap_area"], float)
    assert r["generated"]["files"] == r["reference"]["files"] == 4

    page = out_html.read_text()
    assert page.count("data:image/png;base64,") >= len(FEATURE_NAMES) + 2  # features + two sets of rolls
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?!data:)[^"'\s>]+""", page, re.I)
    assert external == []
    assert "<link" not in page and "<script" not in page
    for name in FEATURE_NAMES:
        assert name in page

    out = capsys.readouterr().out
    assert "mean" in out and "pitch_class" in out and "polyphony" in out
    assert not list(out_json.parent.glob("*.tmp"))


def test_single_files_work(tmp_path, sets):
    ref, low = sets
    assert run(low / "p0.mid", ref / "p1.mid") == 0


def test_empty_set_is_a_user_error(tmp_path, sets, capsys):
    ref, _ = sets
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.mid").write_bytes(b"")
    (junk / "b.mid").write_bytes(b"MThd garbage")
    assert run(junk, ref) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: generated: no usable MIDI file") and "Traceback" not in err
    empty = tmp_path / "none"
    empty.mkdir()
    assert run(ref, empty) == 2
    assert "no .mid/.midi files" in capsys.readouterr().err
    assert run(ref, tmp_path / "missing") == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_report_piano_roll_titles_clear_the_roll_above(sets):
    # issue 27 item 12: each roll's title was drawn over the previous roll's pedal lane and time axis
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from classical_music.compare.report import _rolls_figure
    from classical_music.compare.sets import PieceSet

    ref, _ = sets
    ps = PieceSet("reference", [str(ref)], files=sorted(ref.glob("*.mid")))
    fig = _rolls_figure(ps, "#2c7bb6")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    rolls = [ax for ax in fig.axes if ax.get_title()]
    assert len(rolls) == 3
    for upper, lower in zip(rolls, rolls[1:]):
        title = lower.title.get_window_extent(renderer)
        # the roll above and the pedal lane under it (it shares the roll's x axis), time labels included
        above = upper.get_shared_x_axes().get_siblings(upper)
        assert len(above) == 2
        lowest = min(a.get_tightbbox(renderer).y0 for a in above)
        assert title.y1 <= lowest, (lower.get_title(), title.y1, lowest)
