"""The studio's jobs: a bounded queue, one worker thread, the model loaded once, result folders.

Each job writes into its own folder under the output folder, named by the server. Finished
jobs are pruned by count and age, but never one that is queued, running or finished less than
`keep_seconds` ago (someone may still be polling it or about to download its files). Above all
the folder holds at most `max_output_mb`: past it the oldest finished results go first, however
recent, and a new job or answer that could not fit even then is refused (OutputFull, a 429).
MP3s of live answers are encoded after the answer is sent, one at a time (a bounded pool).
"""

import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

# Limits, each overridable in create_app. They bound one request's memory and time on a laptop.
MAX_SECONDS = 120.0  # longest piece one request may ask for
MAX_SAMPLES = 4  # variations per request (sampled together as one batch)
MAX_UPLOAD_BYTES = 2 * 2**20  # primer MIDI upload
MAX_PRIMER_SECONDS = 60.0  # opening of the primer run through the model
MAX_QUEUE = 16  # jobs waiting behind the running one; one more is answered 429
KEEP_JOBS = 10  # finished result folders kept (a 2-minute WAV is ~20 MB); older ones are deleted...
KEEP_SECONDS = 300.0  # ...but never one finished less than this ago (its page may still be fetching files)
MAX_AGE_SECONDS = 24 * 3600.0  # and none older than this, however few there are
MAX_OUTPUT_MB = 2048  # all result folders together; the oldest finished go first past it
# What a result costs on disk per second of music, per variation: a 48 kHz 16-bit stereo WAV
# (192 kB/s), its 192 kbit/s MP3 (24 kB/s), and the MIDI and picture, with room to spare.
BYTES_PER_SECOND = 230_000
DEFAULTS = {"seconds": 20.0, "temperature": 1.0, "top_p": 1.0, "seed": None, "num_samples": 1,
            "primer_seconds": 10.0, "form": "through"}
STUDIO_FORMS = ("through", "ABA", "AABA", "ABACA")  # the Form menu (ABACA: a rondo); any plan ends on a cadence
DEFAULT_OUTPUT_DIR = Path("outputs/studio")

STATIC = Path(__file__).with_name("static")
SUFFIX = {"midi": ".mid", "wav": ".wav", "mp3": ".mp3", "png": ".png"}
MEDIA_TYPE = {".mid": "audio/midi", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".png": "image/png"}
SAMPLING_SHARE = 0.7  # of the progress bar; the rest is writing MIDI, audio and the piano roll
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: the only folder names the studio creates or deletes


class QueueFull(Exception):
    pass


class OutputFull(Exception):
    """A new result would not fit in max_output_mb even with every finished one deleted."""


@dataclass
class Job:
    id: str
    params: dict
    folder: Path
    primer: object = None  # Notes parsed at upload time, so a bad file fails the request, not the job
    status: str = "queued"  # queued -> running -> done | error
    stage: str = "queued"  # finer, for the page: queued, loading, composing, rendering, done, error
    progress: float = 0.0
    error: str | None = None
    variations: list = field(default_factory=list)  # [{"files": {kind: file name}, "seconds", "notes"}]
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pending: dict = field(default_factory=dict)  # file name -> threading.Event set once it is written
    reserved: int = 0  # bytes held for it in max_output_mb while it is queued or running


class Studio:
    """The job queue, its single worker thread, the model and the result folders."""

    def __init__(self, checkpoint=None, output_dir=None, *, max_seconds=MAX_SECONDS, max_samples=MAX_SAMPLES,
                 max_upload_bytes=MAX_UPLOAD_BYTES, max_primer_seconds=MAX_PRIMER_SECONDS, keep_jobs=KEEP_JOBS,
                 max_queue=MAX_QUEUE, soundfont=None, device="cpu", keep_seconds=KEEP_SECONDS,
                 max_age_seconds=MAX_AGE_SECONDS, piano=None, reverb=None, models_dir=None,
                 max_output_mb=MAX_OUTPUT_MB):
        if keep_jobs < 1:
            raise UserError(f"keep_jobs must be >= 1, got {keep_jobs}")
        if max_queue < 1:
            raise UserError(f"max_queue must be >= 1, got {max_queue}")
        if not max_output_mb > 0:
            raise UserError(f"--max_output_mb must be positive, got {max_output_mb}")
        if output_dir is None:
            import tempfile

            output_dir = tempfile.mkdtemp(prefix="classical-music-studio-")
        self.output_dir = Path(output_dir).resolve()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output folder {self.output_dir}: {e.strerror or e}") from None
        self.checkpoint = checkpoint
        self.startup_checkpoint = checkpoint
        self.models_dir = models_dir
        self.model_name = self.models()[0]["name"]
        self.max_seconds = float(max_seconds)
        self.max_samples = int(max_samples)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_primer_seconds = float(max_primer_seconds)
        self.keep_jobs = int(keep_jobs)
        self.keep_seconds = float(keep_seconds)
        self.max_age_seconds = float(max_age_seconds)
        self.max_output_bytes = int(max_output_mb * 2**20)
        self._live_reserved = 0  # bytes held by answers being written outside the queue
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="studio-mp3")
        from ..audio import DEFAULT_REVERB, check_reverb, find_instrument

        self.soundfont = soundfont
        # chosen once, so a missing grand is said once at start-up, not at every piece
        self.instrument = find_instrument(piano, soundfont)
        self.reverb = check_reverb(DEFAULT_REVERB if reverb is None else reverb)
        self.device = device
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._model = None
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    # -- the model, loaded once ------------------------------------------------------------------

    def warm(self) -> None:
        """Load the sampler now at both rates in use (pieces at 44.1 kHz, play-along at 48), so no
        request waits for the instrument to load."""
        from ..audio import sampler
        from .live import LIVE_RATE

        if self.instrument.kind == "sfz":
            for rate in (44100, LIVE_RATE):
                sampler.warm(self.instrument.path, rate)

    def model(self):
        with self._model_lock:
            if self._model is None:
                from ..decoding import keep_decoders
                from ..generate import load_model

                model = load_model(self.checkpoint, self.device)
                # sample() asks for a StepDecoder per piece, re-arranging (and for int8 quantizing)
                # all weights: 0.07-0.27 s that a live answer cannot spare. The studio never trains,
                # so one per precision serves every request.
                keep_decoders(model)
                self._model = model
            return self._model

    def models(self) -> list[dict]:
        from .models import list_models

        return list_models(self.models_dir, self.startup_checkpoint)

    def select(self, name: str) -> str:
        """Compose with another model from now on (the studio's one menu: jobs already queued get it
        too). It is loaded at once, so a damaged checkpoint is a UserError and the old one stays."""
        from .models import find_model

        entry = find_model(self.models(), name)
        with self._model_lock:
            old = (self.checkpoint, self._model, self.model_name)
            self.checkpoint, self._model, self.model_name = entry["path"], None, entry["name"]
        try:
            self.model()
        except UserError:
            with self._model_lock:
                self.checkpoint, self._model, self.model_name = old
            raise
        return entry["name"]

    # -- requests ---------------------------------------------------------------------------------

    def check(self, seconds, temperature, top_p, seed, num_samples, form=DEFAULTS["form"]) -> dict:
        """The parameters of one request, or UserError naming the first bad one."""
        if form not in STUDIO_FORMS:
            raise UserError(f"form must be one of {', '.join(STUDIO_FORMS)}, got {form!r}")
        if not 0 < seconds <= self.max_seconds:
            raise UserError(f"seconds must be > 0 and at most {self.max_seconds:g}, got {seconds:g}")
        from ..generate.options import SamplingOptions

        SamplingOptions(temperature=temperature, top_p=top_p).validate(flag="")
        if not 1 <= num_samples <= self.max_samples:
            raise UserError(f"num_samples must be between 1 and {self.max_samples}, got {num_samples}")
        if seed is not None and not 0 <= seed < 2**31:
            raise UserError(f"seed must be between 0 and {2**31 - 1}, got {seed}")
        if seed is None:  # chosen here so the page can show it and the piece can be made again
            seed = int(np.random.SeedSequence().entropy % 2**31)
        return {"seconds": float(seconds), "temperature": float(temperature), "top_p": float(top_p),
                "seed": int(seed), "num_samples": int(num_samples), "form": form}

    def read_primer(self, data: bytes, primer_seconds: float):
        """Uploaded bytes -> Notes of the opening, or UserError (no server paths in the message)."""
        import tempfile

        from ..notes import MidiReadError, Notes, load_score, score_to_notes

        if len(data) > self.max_upload_bytes:
            raise UserError(f"the primer is larger than {self.max_upload_bytes / 2**20:g} MB")
        if not 0 < primer_seconds <= self.max_primer_seconds:
            raise UserError(f"primer_seconds must be > 0 and at most {self.max_primer_seconds:g}, "
                            f"got {primer_seconds:g}")
        if data[:4] not in (b"MThd", b"RIFF"):
            raise UserError("the primer is not a MIDI file (it should start with MThd)")
        with tempfile.TemporaryDirectory(dir=self.output_dir, prefix=".upload-") as tmp:
            path = Path(tmp) / "primer.mid"
            path.write_bytes(data)
            try:
                notes = score_to_notes(load_score(path))
            except MidiReadError as e:
                raise UserError(f"the primer is not a usable MIDI file: {e}") from None
        keep = notes.onset < primer_seconds
        notes = Notes(notes.onset[keep], np.minimum(notes.offset[keep], primer_seconds), notes.pitch[keep],
                      notes.velocity[keep])
        if len(notes) == 0:
            raise UserError(f"the primer has no notes in its first {primer_seconds:g} s")
        return notes

    def submit(self, params: dict, primer=None) -> Job:
        job_id = uuid.uuid4().hex
        job = Job(job_id, params, self.output_dir / job_id, primer)
        seconds = params["seconds"] + params.get("primer_seconds", 0.0)  # the primer stays in the piece
        job.reserved = int(seconds * params["num_samples"] * BYTES_PER_SECOND)
        with self._lock:
            self._check_room(job.reserved)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
                self._worker.start()
            self.jobs[job_id] = job
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                del self.jobs[job_id]
                raise QueueFull from None
        try:
            self._prune()  # room for it now: finished results beyond max_output_mb go before it runs
        except OSError:
            log.exception("pruning old results failed")
        return job

    def _check_room(self, need: int) -> None:
        """OutputFull unless `need` bytes fit beside what queued and running work holds (finished
        results can all be deleted to make room). Called with self._lock held."""
        held = self._live_reserved + sum(j.reserved for j in self.jobs.values() if j.finished is None)
        if held + need > self.max_output_bytes:
            cap = self.max_output_bytes / 2**20
            raise OutputFull(f"the studio's output folder is full: this needs ~{need / 2**20:,.0f} MB and "
                             f"{held / 2**20:,.0f} MB of the {cap:,.0f} MB (--max_output_mb) are held by work in "
                             "progress; ask for a shorter piece or try again when it is done")

    @contextmanager
    def room_for(self, need: int):
        """Hold `need` bytes of max_output_mb while a live answer is written (OutputFull if none)."""
        with self._lock:
            self._check_room(need)
            self._live_reserved += need
        try:
            yield
        finally:
            with self._lock:
                self._live_reserved -= need

    def encode_later(self, fn, *args) -> None:
        """Run an encoder after the answer is sent, one at a time: each holds a whole WAV in memory."""
        self._encoder.submit(fn, *args)

    def add_finished(self, job: Job) -> None:
        """Register a result made outside the queue (a live answer), so its files are served and pruned."""
        with self._lock:
            self.jobs[job.id] = job
        try:
            self._prune()
        except OSError:
            log.exception("pruning old results failed")

    def close(self) -> None:
        """Let the worker finish the running job and stop; queued jobs are dropped."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # -- the worker -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        job.started = time.time()
        job.status = "running"
        outcome = "error"
        try:
            job.variations = self._compose(job)
            job.progress = 1.0
            outcome = "done"
        except UserError as e:
            job.error = str(e)
        except Exception as e:  # keep the worker alive for the next job; the log has the traceback
            log.exception("job %s failed", job.id)
            job.error = f"composing failed: {type(e).__name__}: {e}"
        finally:
            job.primer = None
            job.finished = time.time()
            try:
                self._prune()  # before the job reads as finished: who sees it done sees old ones gone
            except OSError:
                log.exception("pruning old results failed")
            job.status = job.stage = outcome

    def _compose(self, job: Job) -> list[dict]:
        # generate's own path (composer.compose) with the model the studio keeps; then the files
        from ..audio import render
        from ..generate import output_paths, primer_tokens, write_midi_atomic
        from ..generate.composer import compose
        from ..generate.form import variation_plans
        from ..generate.options import SamplingOptions
        from ..memory import composing
        from ..notes import notes_to_score
        from ..plot import piano_roll

        p = job.params
        job.stage = "loading"
        model = self.model()
        tok = model.tokenizer
        prefix = primer_tokens(tok, job.primer)
        primer_end = 0.0 if job.primer is None else float(job.primer.offset.max())

        def progress(fraction):
            job.progress = SAMPLING_SHARE * fraction

        job.stage = "composing"
        style = p.get("style") or {}
        # the plan, as `generate --form` makes it: sections, returns, cadences and a final tonic
        plans = variation_plans(model, style, job.primer is not None, p.get("form", DEFAULTS["form"]), None,
                                p["seconds"], style.get("key"), style.get("density"), "cadence", p["seed"],
                                p["num_samples"])
        piece = compose(model, prefix, seconds=p["seconds"], num_samples=p["num_samples"], seed=p["seed"],
                        style=style, options=SamplingOptions.pick(p), plans=plans,
                        memory=composing(model, p.get("memory")),  # none asked: the model's default
                        device=self.device, progress=progress)

        job.stage = "rendering"
        job.folder.mkdir(parents=True, exist_ok=True)
        # the sections' bands on the piano roll and the page, on the piece's clock (after the primer)
        # (none where the tokenizer has no time to plan by: REMI composes through)
        bands = None if piece.plans is None or plans[0].through else plans[0].bands(primer_end)
        pieces = piece.pieces(tok, primer_end)  # the primer stays in the piece, as in `generate`
        steps, step = 3 * len(pieces), 0
        variations = []
        for i, (path, (notes, pedals)) in enumerate(zip(output_paths(job.folder / "piece.mid", len(pieces)), pieces), 1):
            write_midi_atomic(notes_to_score(notes, pedals=pedals), path)
            files = {"midi": path.name}
            if len(notes):  # a silent variation has nothing to render or draw
                kinds = ("mp3", "wav")  # one synthesis for both
                render(path, [path.with_suffix(SUFFIX[k]) for k in kinds], instrument=self.instrument, reverb=self.reverb)
                files.update({k: path.with_suffix(SUFFIX[k]).name for k in kinds})
                step += 2
                job.progress = SAMPLING_SHARE + (1 - SAMPLING_SHARE) * step / steps
                piano_roll(path, path.with_suffix(".png"), sections=bands)
                files["png"] = path.with_suffix(".png").name
            step = 3 * i
            job.progress = SAMPLING_SHARE + (1 - SAMPLING_SHARE) * step / steps
            variations.append({"files": files, "seconds": round(notes.seconds, 3), "notes": len(notes),
                               "sections": [{"label": a, "start": round(b, 2), "end": round(c, 2)}
                                            for a, b, c in bands or ()]})
        return variations

    def _prune(self) -> None:
        """Delete finished result folders beyond the newest keep_jobs, or older than max_age_seconds,
        including ones left by earlier runs; never a queued or running job, nor one finished less
        than keep_seconds ago (its page may still be polling it or fetching its files)."""
        now = time.time()
        with self._lock:
            finished = {j.id: j.finished for j in self.jobs.values() if j.finished is not None}
            active = {j.id for j in self.jobs.values() if j.finished is None}
            ages = dict(finished)
            for d in self.output_dir.iterdir():
                if _JOB_ID.fullmatch(d.name) and d.is_dir() and d.name not in ages and d.name not in active:
                    ages[d.name] = d.stat().st_mtime
            newest_first = sorted(ages, key=ages.get, reverse=True)
            old = [j for i, j in enumerate(newest_first)
                   if now - ages[j] >= self.keep_seconds and (i >= self.keep_jobs or now - ages[j] > self.max_age_seconds)]
            # the byte cap: oldest finished first, recent or not, until the rest fits (the newest
            # stays: it fit when it was accepted)
            left = [j for j in newest_first if j not in old]
            total = self._live_reserved + sum(j.reserved for j in self.jobs.values() if j.finished is None)
            total += sum(map(self._bytes_of, left))
            for job_id in reversed(left[1:]):
                if total <= self.max_output_bytes:
                    break
                total -= self._bytes_of(job_id)
                old.append(job_id)
            for job_id in old:
                self.jobs.pop(job_id, None)
        for job_id in old:
            shutil.rmtree(self.output_dir / job_id, ignore_errors=True)

    def _bytes_of(self, job_id: str) -> int:
        """Bytes in a result folder (flat: the studio writes no sub-folders)."""
        try:
            return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(self.output_dir / job_id)
                       if e.is_file(follow_symlinks=False))
        except OSError:
            return 0

    # -- answers ----------------------------------------------------------------------------------

    def describe(self, job: Job) -> dict:
        def urls(files):
            return {kind: f"/files/{job.id}/{name}" for kind, name in files.items()}

        variations = [{**v, "files": urls(v["files"])} for v in job.variations]
        out = {"id": job.id, "status": job.status, "stage": job.stage, "progress": round(job.progress, 4),
               "params": job.params, "files": variations[0]["files"] if variations else {},
               "variations": variations, "created": job.created, "started": job.started,
               "finished": job.finished}
        if job.status == "queued":
            with self._lock:
                waiting = [j for j in self.jobs.values() if j.status == "queued"]
            out["queue_position"] = 1 + sum(j.created < job.created for j in waiting)
        if job.error is not None:
            out["error"] = job.error
        return out

    def file(self, job_id: str, name: str) -> Path | None:
        """The path of a file the job wrote, or None: names are checked against the job's own list."""
        job = self.jobs.get(job_id)
        if job is None or job.status != "done":
            return None
        names = {n for v in job.variations for n in v["files"].values()}
        if name not in names:
            return None
        path = job.folder / name
        return path if path.is_file() else None

    def pending(self, job_id: str, name: str) -> threading.Event | None:
        """The event a file still being written (a live answer's MP3) sets when done, else None."""
        job = self.jobs.get(job_id)
        event = None if job is None else job.pending.get(name)
        return None if event is None or event.is_set() else event
