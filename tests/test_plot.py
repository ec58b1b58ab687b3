"""Piano-roll pictures: bars, note names, velocity colours, the pedal lane, PNG output."""

from __future__ import annotations

import os

import numpy as np
import pytest
import symusic
from conftest import scale, write_midi
from matplotlib.figure import Figure

from classical_music.errors import UserError
from classical_music.plot import note_name, piano_roll


def _axes(fig):
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    return by_label["pitch"], by_label["pedal"], by_label["velocity"]


def test_png_with_bars_note_names_colorbar_and_pedal_lane(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(16), pedals=[(0.5, 1.5), (2.0, 3.0)])
    out = tmp_path / "roll.png"
    fig = piano_roll(mid, out, title="scale")
    assert isinstance(fig, Figure)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["a.mid", "roll.png"]  # no temporary left behind

    roll, lane, cbar = _axes(fig)
    assert roll.get_title() == "scale"
    labels = [t.get_text() for t in roll.get_yticklabels()]
    assert "C4" in labels and all(label.startswith("C") for label in labels)
    bars = roll.collections[0]
    assert len(bars.get_paths()) == 16
    np.testing.assert_array_equal(bars.get_array(), [n[3] for n in scale(16)])  # coloured by velocity
    spans = sorted((round(p.get_x(), 3), round(p.get_x() + p.get_width(), 3)) for p in lane.patches)
    assert spans == [(0.5, 1.5), (2.0, 3.0)]
    assert roll.get_xlim()[0] == 0 and roll.get_xlim()[1] >= 3.9
    assert not lane.texts  # pedal drawn, so no note about its absence

    _, lane, _ = _axes(piano_roll(write_midi(tmp_path / "b.mid", scale(4))))
    assert not lane.patches and "no sustain pedal" in lane.texts[0].get_text()  # an empty lane says why


def test_pedal_never_lifted_is_drawn_to_the_end(tmp_path):
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(0, 1920, 60, 80))  # 2 s at 120 bpm
    track.controls.append(symusic.ControlChange(480, 64, 100))
    score.tracks.append(track)
    fig = piano_roll(score)  # a Score in ticks is fine too
    _, lane, _ = _axes(fig)
    (p,) = lane.patches
    assert p.get_x() == pytest.approx(0.5) and p.get_x() + p.get_width() == pytest.approx(2.0)


def test_max_seconds_and_drawing_into_given_axes(tmp_path):
    mid = write_midi(tmp_path / "a.mid", scale(40))  # 10 s
    fig = Figure()
    top, bottom = fig.subplots(2, 1)
    got = piano_roll(mid, ax=bottom, max_seconds=3, title="start")
    assert got is fig
    assert bottom.get_xlim() == (0, 3)
    assert len(bottom.collections[0].get_paths()) == 12  # onsets before 3 s
    assert not top.collections  # the other subplot is left alone


def test_empty_score_still_draws(tmp_path):
    fig = piano_roll(write_midi(tmp_path / "e.mid", []), tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 0 and fig.axes


def test_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        piano_roll(tmp_path / "missing.mid")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(UserError, match="cannot read"):
        piano_roll(bad)
    mid = write_midi(tmp_path / "a.mid", scale(4))
    with pytest.raises(UserError, match="does not exist"):
        piano_roll(mid, tmp_path / "no" / "roll.png")
    assert sorted(os.listdir(tmp_path)) == ["a.mid", "bad.mid"]


def test_note_names():
    assert [note_name(p) for p in (21, 60, 61, 108)] == ["A0", "C4", "C#4", "C8"]
