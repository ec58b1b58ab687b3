"""The browser studio: compose a piece on a local web page, listen to it, download it.

    classical-music serve [--host 127.0.0.1] [--port 8000] [--checkpoint DIR] [--output_dir DIR]

FastAPI serves one hand-written page (web/static/, no build step) and a JSON API, documented by
OpenAPI at /docs:

    POST /api/generate              JSON {seconds, temperature, top_p, seed, num_samples} -> 202 {"id"}
    POST /api/generate_with_primer  the same fields as multipart form fields, plus the MIDI file
                                    `primer` and `primer_seconds` (how much of its opening to continue)
    GET  /api/jobs/{id}             {"status": queued|running|done|error, "progress": 0..1, "files":
                                    {midi, wav, mp3, png: url}, "variations": [{"files", ...}], "error"}
    GET  /files/{id}/{name}         one result file; only names the job itself wrote are served
    GET  /api/config                limits and defaults (the page reads them)

Jobs run one at a time on a single worker thread, so concurrent visitors wait in a bounded queue
(429 when it is full) instead of running the machine out of memory; the model is loaded once and
reused. Each job writes into its own folder under the output folder, named by the server; only the
newest `keep_jobs` folders are kept.
"""

# No `from __future__ import annotations`: FastAPI must see the real types of the route
# parameters, whose models are defined inside create_app.

import logging
import queue
import re
import shutil
import socket
import threading
import time
import uuid
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
KEEP_JOBS = 10  # result folders kept (a 2-minute WAV is ~20 MB); older ones are deleted
DEFAULTS = {"seconds": 20.0, "temperature": 1.0, "top_p": 1.0, "seed": None, "num_samples": 1,
            "primer_seconds": 10.0}
DEFAULT_OUTPUT_DIR = Path("outputs/studio")

STATIC = Path(__file__).with_name("static")
SUFFIX = {"midi": ".mid", "wav": ".wav", "mp3": ".mp3", "png": ".png"}
MEDIA_TYPE = {".mid": "audio/midi", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".png": "image/png"}
SAMPLING_SHARE = 0.7  # of the progress bar; the rest is writing MIDI, audio and the piano roll
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: the only folder names the studio creates or deletes


class QueueFull(Exception):
    pass


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


class Studio:
    """The job queue, its single worker thread, the model and the result folders."""

    def __init__(self, checkpoint=None, output_dir=None, *, max_seconds=MAX_SECONDS, max_samples=MAX_SAMPLES,
                 max_upload_bytes=MAX_UPLOAD_BYTES, max_primer_seconds=MAX_PRIMER_SECONDS, keep_jobs=KEEP_JOBS,
                 max_queue=MAX_QUEUE, soundfont=None, device="cpu"):
        if keep_jobs < 1:
            raise UserError(f"keep_jobs must be >= 1, got {keep_jobs}")
        if max_queue < 1:
            raise UserError(f"max_queue must be >= 1, got {max_queue}")
        if output_dir is None:
            import tempfile

            output_dir = tempfile.mkdtemp(prefix="classical-music-studio-")
        self.output_dir = Path(output_dir).resolve()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output folder {self.output_dir}: {e.strerror or e}") from None
        self.checkpoint = checkpoint
        self.max_seconds = float(max_seconds)
        self.max_samples = int(max_samples)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_primer_seconds = float(max_primer_seconds)
        self.keep_jobs = int(keep_jobs)
        self.soundfont = soundfont
        self.device = device
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._model = None
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    # -- the model, loaded once ------------------------------------------------------------------

    def model(self):
        with self._model_lock:
            if self._model is None:
                from ..generate import load_model

                self._model = load_model(self.checkpoint, self.device)
            return self._model

    # -- requests ---------------------------------------------------------------------------------

    def check(self, seconds, temperature, top_p, seed, num_samples) -> dict:
        """The parameters of one request, or UserError naming the first bad one."""
        if not 0 < seconds <= self.max_seconds:
            raise UserError(f"seconds must be > 0 and at most {self.max_seconds:g}, got {seconds:g}")
        if not 0 < temperature <= 100:
            raise UserError(f"temperature must be > 0 (and at most 100), got {temperature:g}")
        if not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {top_p:g}")
        if not 1 <= num_samples <= self.max_samples:
            raise UserError(f"num_samples must be between 1 and {self.max_samples}, got {num_samples}")
        if seed is not None and not 0 <= seed < 2**31:
            raise UserError(f"seed must be between 0 and {2**31 - 1}, got {seed}")
        if seed is None:  # chosen here so the page can show it and the piece can be made again
            seed = int(np.random.SeedSequence().entropy % 2**31)
        return {"seconds": float(seconds), "temperature": float(temperature), "top_p": float(top_p),
                "seed": int(seed), "num_samples": int(num_samples)}

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
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
                self._worker.start()
            self.jobs[job_id] = job
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                del self.jobs[job_id]
                raise QueueFull from None
        return job

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
        # generate.compose() loads the model on every call and has no progress hook, so the studio
        # drives sample() itself with the model it keeps, then writes files the way compose() does.
        from ..audio import render
        from ..generate import output_paths, primer_tokens, sample, write_midi_atomic
        from ..notes import Notes, notes_to_score
        from ..plot import piano_roll

        p = job.params
        job.stage = "loading"
        model = self.model()
        tok = model.tokenizer
        prefix = primer_tokens(tok, job.primer)
        primer_end = 0.0 if job.primer is None else float(job.primer.offset.max())

        def progress(n, total, music_seconds):
            done = n / total if music_seconds is None else music_seconds / p["seconds"]
            job.progress = SAMPLING_SHARE * min(max(done, 0.0), 1.0)

        job.stage = "composing"
        rows = sample(model, tok, prefix, num_samples=p["num_samples"], seconds=p["seconds"],
                      temperature=p["temperature"], top_p=p["top_p"], seed=p["seed"], device=self.device,
                      progress=progress)

        job.stage = "rendering"
        job.folder.mkdir(parents=True, exist_ok=True)
        limit = p["seconds"] + primer_end  # the primer stays in the piece, as in `generate`
        steps, step = 3 * len(rows), 0
        variations = []
        for i, (path, new) in enumerate(zip(output_paths(job.folder / "piece.mid", len(rows)), rows), 1):
            notes = tok.decode(np.concatenate([prefix, new]))
            keep = notes.onset < limit
            notes = Notes(notes.onset[keep], np.minimum(notes.offset[keep], limit), notes.pitch[keep],
                          notes.velocity[keep])
            write_midi_atomic(notes_to_score(notes), path)
            files = {"midi": path.name}
            if len(notes):  # a silent variation has nothing to render or draw
                for kind in ("mp3", "wav"):
                    render(path, path.with_suffix(SUFFIX[kind]), soundfont=self.soundfont)
                    files[kind] = path.with_suffix(SUFFIX[kind]).name
                    step += 1
                    job.progress = SAMPLING_SHARE + (1 - SAMPLING_SHARE) * step / steps
                piano_roll(path, path.with_suffix(".png"), title=f"Variation {i}")
                files["png"] = path.with_suffix(".png").name
            step = 3 * i
            job.progress = SAMPLING_SHARE + (1 - SAMPLING_SHARE) * step / steps
            variations.append({"files": files, "seconds": round(notes.seconds, 3), "notes": len(notes)})
        return variations

    def _prune(self) -> None:
        """Delete the oldest result folders beyond keep_jobs, including ones left by earlier runs."""
        with self._lock:
            finished = {j.id: j.finished for j in self.jobs.values() if j.finished is not None}
            active = {j.id for j in self.jobs.values() if j.finished is None}
            ages = dict(finished)
            for d in self.output_dir.iterdir():
                if _JOB_ID.fullmatch(d.name) and d.is_dir() and d.name not in ages and d.name not in active:
                    ages[d.name] = d.stat().st_mtime
            old = sorted(ages, key=ages.get)[:-self.keep_jobs]
            for job_id in old:
                self.jobs.pop(job_id, None)
        for job_id in old:
            shutil.rmtree(self.output_dir / job_id, ignore_errors=True)

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


# -- the app ----------------------------------------------------------------------------------


def create_app(checkpoint=None, output_dir=None, *, max_seconds=MAX_SECONDS, max_samples=MAX_SAMPLES,
               max_upload_bytes=MAX_UPLOAD_BYTES, max_primer_seconds=MAX_PRIMER_SECONDS, keep_jobs=KEEP_JOBS,
               max_queue=MAX_QUEUE, soundfont=None, device="cpu", preload=False):
    """The studio's FastAPI app. output_dir=None uses a fresh temporary folder; preload=True loads
    the model now (so `serve` fails at once on a bad checkpoint) instead of on the first job."""
    # FastAPI is imported here, not at module level, so `classical-music --help` stays fast.
    from contextlib import asynccontextmanager
    from typing import Annotated, Optional

    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field

    from .. import __version__

    studio = Studio(checkpoint, output_dir, max_seconds=max_seconds, max_samples=max_samples,
                    max_upload_bytes=max_upload_bytes, max_primer_seconds=max_primer_seconds, keep_jobs=keep_jobs,
                    max_queue=max_queue, soundfont=soundfont, device=device)
    if preload:
        studio.model()

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        seconds: float = Field(DEFAULTS["seconds"], gt=0, le=studio.max_seconds, description="seconds of music")
        temperature: float = Field(DEFAULTS["temperature"], gt=0, le=100, description="> 1 wilder, < 1 safer")
        top_p: float = Field(DEFAULTS["top_p"], gt=0, le=1, description="nucleus sampling mass (1 = off)")
        seed: Optional[int] = Field(DEFAULTS["seed"], ge=0, lt=2**31, description="omit for a random one")
        num_samples: int = Field(DEFAULTS["num_samples"], ge=1, le=studio.max_samples, description="variations")

    class JobCreated(BaseModel):
        id: str

    @asynccontextmanager
    async def lifespan(app):
        yield
        studio.close()

    app = FastAPI(title="Classical Music Studio", version=__version__, lifespan=lifespan,
                  description="Compose piano pieces with the LSTM, listen to them and download MIDI, WAV, "
                              "MP3 and a piano roll. Jobs run one at a time; poll /api/jobs/{id}.")
    app.state.studio = studio

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request, exc):
        # One readable line like the CLI's errors, instead of pydantic's nested list.
        parts = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                parts.append("the request body is not valid JSON")
                continue
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where or 'request body'}: {e.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        # Before the multipart parser spools anything: an honest Content-Length is refused at once.
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > studio.max_upload_bytes + 64 * 1024:
            return JSONResponse({"detail": f"request too large: uploads are limited to "
                                           f"{studio.max_upload_bytes / 2**20:g} MB"}, status_code=413)
        return await call_next(request)

    def submit(params, primer=None) -> dict:
        try:
            return {"id": studio.submit(params, primer).id}
        except QueueFull:
            raise HTTPException(429, f"the studio is busy: {studio._queue.maxsize} jobs are already waiting; "
                                     "try again in a minute") from None

    @app.post("/api/generate", status_code=202, response_model=JobCreated, summary="Compose a piece")
    def generate(req: GenerateRequest):
        try:
            params = studio.check(req.seconds, req.temperature, req.top_p, req.seed, req.num_samples)
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        return submit(params)

    @app.post("/api/generate_with_primer", status_code=202, response_model=JobCreated,
              summary="Compose a piece that continues the opening of an uploaded MIDI file")
    def generate_with_primer(
        primer: Annotated[UploadFile, File(description=f"a MIDI file (at most {max_upload_bytes / 2**20:g} MB)")],
        seconds: Annotated[float, Form()] = DEFAULTS["seconds"],
        temperature: Annotated[float, Form()] = DEFAULTS["temperature"],
        top_p: Annotated[float, Form()] = DEFAULTS["top_p"],
        seed: Annotated[Optional[int], Form()] = None,
        num_samples: Annotated[int, Form()] = DEFAULTS["num_samples"],
        primer_seconds: Annotated[float, Form(description="use the primer's first seconds")] = DEFAULTS[
            "primer_seconds"],
    ):
        try:
            params = studio.check(seconds, temperature, top_p, seed, num_samples)
            data = primer.file.read(studio.max_upload_bytes + 1)
            if len(data) > studio.max_upload_bytes:
                raise HTTPException(413, f"the primer is larger than {studio.max_upload_bytes / 2**20:g} MB")
            notes = studio.read_primer(data, primer_seconds)
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        params["primer_seconds"] = float(primer_seconds)
        return submit(params, notes)

    @app.get("/api/jobs/{job_id}", summary="A job's status, progress and result files")
    def job_status(job_id: str):
        job = studio.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job (results are kept only for the most recent jobs)")
        return studio.describe(job)

    @app.get("/api/config", summary="Limits and defaults")
    def config():
        return {"max_seconds": studio.max_seconds, "max_samples": studio.max_samples,
                "max_upload_bytes": studio.max_upload_bytes, "max_primer_seconds": studio.max_primer_seconds,
                "max_queue": studio._queue.maxsize, "keep_jobs": studio.keep_jobs, "defaults": DEFAULTS}

    @app.get("/files/{job_id}/{name}", summary="A result file (MIDI, WAV, MP3 or PNG)")
    def result_file(job_id: str, name: str):
        path = studio.file(job_id, name)
        if path is None:
            raise HTTPException(404, "no such file")
        return FileResponse(path, media_type=MEDIA_TYPE[path.suffix], filename=f"{job_id[:8]}-{name}",
                            content_disposition_type="inline")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# -- the command ------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="the browser studio: compose, listen and download on a local web page",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder or a file inside one (default: the model shipped in the package)")
    p.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                   help=f"folder for results, one sub-folder per job (default {DEFAULT_OUTPUT_DIR})")
    p.add_argument("--keep_jobs", type=int, default=KEEP_JOBS,
                   help=f"result folders kept; older ones are deleted (default {KEEP_JOBS})")
    p.add_argument("--soundfont", type=Path, default=None, help="SF2 SoundFont for the audio")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--open", action="store_true", help="open the studio in the web browser once it is up")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import uvicorn

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    # uvicorn reports a busy port as a log line and exits 1; say it as a user error instead.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args.host, args.port))
        except OSError as e:
            raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    app = create_app(args.checkpoint, args.output_dir, keep_jobs=args.keep_jobs, soundfont=args.soundfont,
                     device=args.device, preload=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"studio at http://{host}:{args.port}/  (API docs at /docs; results in {args.output_dir}; "
          "Ctrl+C stops)", flush=True)
    if args.open:
        _open_browser_when_up(args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _open_browser_when_up(host: str, port: int, wait: float = 30.0) -> threading.Thread:
    """--open: webbrowser.open once the port answers (uvicorn.run blocks, so from a thread)."""
    import webbrowser

    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # every address: open this machine's
    url = f"http://{f'[{local}]' if ':' in local else local}:{port}/"

    def opener():
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                socket.create_connection((local, port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            webbrowser.open(url)
            return

    t = threading.Thread(target=opener, name="open-browser", daemon=True)
    t.start()
    return t
