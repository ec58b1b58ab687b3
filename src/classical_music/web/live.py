"""Play along: the model answers what a person played, in one request (no job to poll).

    POST /api/continue  {"notes": [[pitch, start_s, end_s, velocity], ...], "seconds", "temperature",
                         "top_p", "seed", style fields} -> 200 {"notes", "start", "seconds", "seed", "files": {midi, wav, mp3}}
    POST /api/duet      {"you": notes, "model": notes} -> 200 {"files": {midi, wav, mp3}}

The answer's notes come back on the request's own clock (they follow the played notes); its files
hold the answer alone, starting at its first note (`start`), so the page can play them the moment
they arrive. The duet is both parts, the model's on its own track.

Answers run at once on the request's thread (the job queue's worker may be busy with a long
piece): one at a time, a second waits up to LIVE_WAIT seconds and then gets 429. An 8-s answer
costs ~0.1-0.2 s of sampling plus ~0.1 s of synthesis and encoding (bench/continue_latency.py).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
import time
import uuid

import numpy as np

from ..errors import UserError
from .studio import BYTES_PER_SECOND, Job

log = logging.getLogger(__name__)

MAX_ANSWER_SECONDS = 30.0  # longest answer one request may ask for
MAX_NOTES = 2000  # played notes one request may send (10 s of fast playing is ~100-300)
MAX_SPAN_SECONDS = 60.0  # from the first note's start to the last one's end; send the latest part
MAX_CLOCK_SECONDS = 24 * 3600.0  # start and end times: a day of playing on the page's clock
MIN_NOTE_SECONDS = 0.02  # shorter taps are lengthened: a 0-step note would vanish in the tokens
LIVE_WAIT = 10.0
LIVE_RATE = 48000  # the samples' own rate and midirenderer's: no resampling on the way to the page
RENDER_TAIL_SECONDS = 3.0  # the release and reverb after the last note, in the audio files
LIVE_DEFAULTS = {"seconds": 8.0, "temperature": 1.0, "top_p": 1.0, "seed": None}


class Busy(Exception):
    pass


def check_notes(rows, what="notes", allow_empty=False):
    """[[pitch, start, end, velocity], ...] -> Notes sorted by onset, or UserError naming the row."""
    from ..notes import Notes

    if not isinstance(rows, list):
        raise UserError(f"{what} must be a list of [pitch, start_s, end_s, velocity]")
    if len(rows) > MAX_NOTES:
        raise UserError(f"{what}: at most {MAX_NOTES} notes per request, got {len(rows)}")
    if not rows and not allow_empty:
        raise UserError(f"{what}: play at least one note")
    onset, offset, pitch, velocity = (np.zeros(len(rows)) for _ in range(4))
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4:
            raise UserError(f"{what}[{i}] must be [pitch, start_s, end_s, velocity]")
        p, s, e, v = row
        for name, x, whole in (("pitch", p, True), ("start", s, False), ("end", e, False), ("velocity", v, True)):
            # bool is an int to Python; JSON true is not a number here
            # an int is finite however large (np.isfinite of 2**64 is a TypeError): the ranges below bound it
            if (isinstance(x, bool) or not isinstance(x, int if whole else (int, float))
                    or (isinstance(x, float) and not np.isfinite(x))):
                raise UserError(f"{what}[{i}]: {name} must be a{'n integer' if whole else ' number'}, got {x!r}")
        if not 0 <= p <= 127:
            raise UserError(f"{what}[{i}]: pitch must be 0..127, got {p}")
        if not 1 <= v <= 127:
            raise UserError(f"{what}[{i}]: velocity must be 1..127, got {v}")
        if not 0 <= s < e <= MAX_CLOCK_SECONDS:
            raise UserError(f"{what}[{i}]: need 0 <= start < end <= {MAX_CLOCK_SECONDS:g}, got {s:g}, {e:g}")
        onset[i], offset[i], pitch[i], velocity[i] = s, e, p, v
    if len(rows) and offset.max() - onset.min() > MAX_SPAN_SECONDS:
        raise UserError(f"{what} span {offset.max() - onset.min():.1f} s; at most {MAX_SPAN_SECONDS:g} s "
                        "(send the latest part of the playing)")
    return Notes(onset, np.maximum(offset, onset + MIN_NOTE_SECONDS), pitch.astype(np.int16),
                 velocity.astype(np.int16)).sorted()


def note_rows(notes, shift=0.0) -> list[list]:
    return [[int(p), round(float(s) + shift, 4), round(float(e) + shift, 4), int(v)]
            for p, s, e, v in zip(notes.pitch, notes.onset, notes.offset, notes.velocity)]


class Live:
    """Answers and duets for one Studio: same model, output folder, file serving and pruning."""

    def __init__(self, studio):
        self.studio = studio
        self._lock = threading.Lock()

    @contextmanager
    def _slot(self):
        if not self._lock.acquire(timeout=LIVE_WAIT):
            raise Busy
        try:
            yield
        finally:
            self._lock.release()

    def answer(self, notes, seconds, temperature, top_p, seed, guidance=1.0, style=None, style_labels=None) -> dict:
        from ..generate import primer_tokens
        from ..generate.composer import compose
        from ..generate.options import SamplingOptions
        from ..notes import Notes

        studio = self.studio
        params = studio.check(seconds, temperature, top_p, seed, 1)
        if seconds > MAX_ANSWER_SECONDS:
            raise UserError(f"seconds must be at most {MAX_ANSWER_SECONDS:g} for an answer, got {seconds:g}")
        t0 = float(notes.onset.min())
        context = Notes(notes.onset - t0, notes.offset - t0, notes.pitch, notes.velocity)
        with self._slot():
            start, cpu = time.perf_counter(), time.thread_time()
            model = studio.model()
            tok = model.tokenizer
            tok.require_timed("play along")  # the answer begins where the played events' time ends
            prefix = primer_tokens(tok, context)
            options = SamplingOptions(temperature=params["temperature"], top_p=params["top_p"], guidance=guidance)
            piece = compose(model, prefix, seconds=params["seconds"], seed=params["seed"], style=style,
                            options=options.validate(flag=""), device=studio.device)
            # the answer: notes struck after the context's last event (every played note ends by then)
            end = float(np.sum(tok.shift_steps(prefix))) / tok.steps_per_second
            both = tok.decode(np.concatenate([prefix, piece.rows[0]]))
            keep = (both.onset >= end - 1e-9) & (both.onset < end + params["seconds"])
            # a key struck and released in one 10-ms step would be a 0-s note: give it the shortest length
            off = np.maximum(np.minimum(both.offset[keep], end + params["seconds"]), both.onset[keep] + MIN_NOTE_SECONDS)
            ans = Notes(both.onset[keep], off, both.pitch[keep], both.velocity[keep]).sorted()
            composed = time.perf_counter()
            first = float(ans.onset.min()) if len(ans) else end
            files = self._write(Notes(ans.onset - first, ans.offset - first, ans.pitch, ans.velocity), params)
        return {"notes": note_rows(ans, t0), "start": round(first + t0, 4), "style": style_labels or {},
                "seconds": round(float(ans.offset.max()) - first, 3) if len(ans) else 0.0, "seed": params["seed"],
                "files": files, "timing": {"compose_s": round(composed - start, 4),
                                           "render_s": round(time.perf_counter() - composed, 4),
                                           # this thread's CPU time: the wall time on an idle machine
                                           "cpu_s": round(time.thread_time() - cpu, 4)}}

    def duet(self, you, model) -> dict:
        with self._slot():
            return self._write(None, {"kind": "duet"}, parts={"You": you, "Model": model})

    def _write(self, notes, params, parts=None) -> dict:
        """MIDI, WAV and MP3 into a new result folder registered as a finished job; {} when silent.
        OutputFull (a 429) when even deleting every finished result would not make room."""
        studio = self.studio
        if parts is None:
            parts = {"Model": notes}
        parts = {k: v for k, v in parts.items() if len(v)}
        if not parts:
            return {}
        job_id = uuid.uuid4().hex
        job = Job(job_id, params, studio.output_dir / job_id, status="done", stage="done", progress=1.0)
        seconds = max(float(p.offset.max()) for p in parts.values())  # every part starts at 0 s
        with studio.room_for(int((seconds + RENDER_TAIL_SECONDS) * BYTES_PER_SECOND)):
            score, midi = self._render(job, parts)
        names = {"midi": midi.name, "wav": midi.with_suffix(".wav").name, "mp3": midi.with_suffix(".mp3").name}
        job.variations = [{"files": names, "seconds": round(seconds, 3),  # seconds, not the score's ticks
                           "notes": sum(len(t.notes) for t in score.tracks)}]
        job.started = job.finished = time.time()
        # The page plays the WAV; the MP3 (a third of the answer's time under load) is encoded
        # after the answer is sent, one at a time, and its URL waits for it (server.result_file).
        job.pending[names["mp3"]] = threading.Event()
        studio.encode_later(_encode_mp3, midi.with_suffix(".wav"), job.pending[names["mp3"]])
        studio.add_finished(job)
        return {kind: f"/files/{job_id}/{name}" for kind, name in names.items()}

    def _render(self, job, parts: dict):
        """The parts' MIDI (a track each) and WAV into the job's new folder; nothing left on failure."""
        from ..audio import render
        from ..generate import write_midi_atomic
        from ..notes import notes_to_score

        job.folder.mkdir(parents=True)
        try:
            score = None
            for name, part in parts.items():
                one = notes_to_score(part)  # same tempo and resolution for every part
                one.tracks[0].name = name
                if score is None:
                    score = one
                else:
                    score.tracks.append(one.tracks[0])
            stem = "duet" if len(parts) > 1 or "You" in parts else "answer"
            midi = job.folder / f"{stem}.mid"
            write_midi_atomic(score, midi)
            render(score, midi.with_suffix(".wav"), instrument=self.studio.instrument,
                   reverb=self.studio.reverb,
                   sample_rate=LIVE_RATE)
        except BaseException:
            import shutil

            shutil.rmtree(job.folder, ignore_errors=True)
            raise
        return score, midi


def _encode_mp3(wav, done: threading.Event) -> None:
    import soundfile

    from ..audio.encode import encode_mp3 as encode
    from ..files import atomic_path

    try:
        audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        with atomic_path(wav.with_suffix(".mp3")) as tmp:
            tmp.write_bytes(encode(audio, rate))
    except Exception:  # the MP3 link then answers 404; the WAV and MIDI are there
        log.exception("encoding %s failed", wav.with_suffix(".mp3"))
    finally:
        done.set()
