"""The browser studio: compose a piece on a local web page, listen to it, download it.

    classical-music serve [--host 127.0.0.1] [--port 8000] [--checkpoint DIR] [--output_dir DIR]

FastAPI serves one hand-written page (web/static/, no build step) and a JSON API, documented by
OpenAPI at /docs:

    POST /api/generate              JSON {seconds, temperature, top_p, seed, num_samples, form} -> 202 {"id"}
    POST /api/generate_with_primer  the same fields as multipart form fields, plus the MIDI file
                                    `primer` and `primer_seconds` (how much of its opening to continue)
    GET  /api/jobs/{id}             {"status": queued|running|done|error, "progress": 0..1, "files":
                                    {midi, wav, mp3, png: url}, "variations": [{"files", ...}], "error"}
    GET  /files/{id}/{name}         one result file; only names the job itself wrote are served
    GET  /api/config                limits and defaults (the page reads them)
    POST /api/continue              play along: JSON {notes: [[pitch, start_s, end_s, velocity]], seconds,
                                    temperature, top_p, seed} -> 200 {notes, start, files} at once (live.py)
    POST /api/duet                  JSON {you: notes, model: notes} -> 200 {files}: both parts rendered
    POST /api/finetune              multipart: MIDI files, name, minutes, composer -> 202 {"id"}: teach the
                                    current model your music (teach.py), one at a time; the result joins
                                    --models_dir; GET /api/finetune/{id} its progress, .../cancel stops it
    GET  /docs                      this API on one offline page (docs_page.py); /openapi.json the schema

Jobs run one at a time on a single worker thread, so concurrent visitors wait in a bounded queue
(429 when it is full) instead of running the machine out of memory; the model is loaded once and
reused. Each job writes into its own folder under the output folder, named by the server (see
studio.py for how old ones are pruned). guard.py caps bodies as they arrive and refuses foreign
Host names and cross-origin posts; /docs is written offline from the schema (docs_page.py).
"""

# No `from __future__ import annotations`: FastAPI must see the real types of the route
# parameters (the request models are in requests.py).

import socket
from types import SimpleNamespace
import threading
import time
from pathlib import Path

import numpy as np

from .. import conditions
from .. import threads as cpu_threads
from ..audio import add_instrument_arguments
from ..errors import UserError
from ..generate.options import MAX_TEMPERATURE, MIN_TEMPERATURE, MIN_TOP_P
from ..notes import Notes
from .docs_page import api_page
from .guard import Guard, allowed_hosts
from .live import LIVE_DEFAULTS, MAX_ANSWER_SECONDS, MAX_NOTES, MAX_SPAN_SECONDS, Busy, Live, check_notes
from .models import DEFAULT_MODELS_DIR
from .teach import MAX_TEACH_BYTES, Teacher, teach_routes
from .studio import (DEFAULT_OUTPUT_DIR, DEFAULTS, KEEP_JOBS, MAX_PRIMER_SECONDS, MAX_QUEUE, MAX_SAMPLES,
                     MAX_OUTPUT_MB, MAX_SECONDS, MAX_UPLOAD_BYTES, MEDIA_TYPE,
                     STATIC, STUDIO_FORMS, OutputFull, QueueFull, Studio)

PENDING_WAIT = 20.0  # seconds a GET of a file still being encoded waits before answering 202

# -- the app ----------------------------------------------------------------------------------


def create_app(checkpoint=None, output_dir=None, *, max_seconds=MAX_SECONDS, max_samples=MAX_SAMPLES,
               max_upload_bytes=MAX_UPLOAD_BYTES, max_primer_seconds=MAX_PRIMER_SECONDS, keep_jobs=KEEP_JOBS,
               max_queue=MAX_QUEUE, soundfont=None, device="cpu", preload=False, host="127.0.0.1", models_dir=None,
               max_output_mb=MAX_OUTPUT_MB, finetune_options=None, **studio_kw):
    """The studio's FastAPI app. output_dir=None uses a fresh temporary folder; preload=True loads
    the model now (so `serve` fails at once on a bad checkpoint) instead of on the first job.
    host: the address it will listen on; requests must name it (or a loopback name) in Host.
    finetune_options: FinetuneConfig fields every fine-tune from the page uses (e.g. threads)."""
    # FastAPI is imported here, not at module level, so `classical-music --help` stays fast.
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.staticfiles import StaticFiles

    from .. import __version__

    studio = Studio(checkpoint, output_dir, max_seconds=max_seconds, max_samples=max_samples,
                    max_upload_bytes=max_upload_bytes, max_primer_seconds=max_primer_seconds, keep_jobs=keep_jobs,
                    max_queue=max_queue, soundfont=soundfont, device=device, models_dir=models_dir,
                    max_output_mb=max_output_mb, **studio_kw)
    if preload:
        studio.model()
        studio.warm()

    @asynccontextmanager
    async def lifespan(app):
        yield
        app.state.teacher.close()  # a running fine-tune is cancelled, its folders removed
        studio.close()

    app = FastAPI(title="Classical Music Studio", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Compose piano pieces with the LSTM, listen to them and download MIDI, WAV, "
                              "MP3 and a piano roll. Jobs run one at a time; poll /api/jobs/{id}.")
    app.state.studio = studio
    app.add_exception_handler(RequestValidationError, one_line_422)
    # the body cap leaves room for the multipart framing and the form fields around the primer
    app.add_middleware(Guard, max_body=studio.max_upload_bytes + 64 * 1024, hosts=allowed_hosts(host),
                       limit_text=f"uploads are limited to {studio.max_upload_bytes / 2**20:g} MB",
                       larger={"/api/finetune": (MAX_TEACH_BYTES + 256 * 1024,
                                                 f"a fine-tune's files are limited to {MAX_TEACH_BYTES / 2**20:g} MB in all")})
    _job_routes(app, studio)
    teach_routes(app, studio, Teacher(studio, finetune_options))
    _live_routes(app, studio)
    _info_routes(app, studio)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def one_line_422(request, exc):
    # One readable line like the CLI's errors, instead of pydantic's nested list.
    from fastapi.responses import JSONResponse

    parts = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where or 'request body'}: {e.get('msg')}")
    if len(parts) > 3:  # a list of 2,000 bad notes is one message, not 2,000
        parts = parts[:3] + [f"and {len(parts) - 3} more"]
    return JSONResponse({"detail": "; ".join(parts)}, status_code=422)


def check_style(studio, fields) -> dict:
    """{"guidance"} plus, when a style is asked for, {"style": asked, "style_labels": what the model
    understood}; UserError for names the model does not know (or a model without conditions)."""
    from ..generate import condition_codes

    asked = conditions.asked({n: getattr(fields, n, None) for n in conditions.NAMES})
    if "density" in asked:  # composed at most at the densest the model learned; the page shows what was used
        asked["density"] = conditions.clamp_density(asked["density"])
    out = {"guidance": float(fields.guidance)}
    if asked:
        _, labels = condition_codes(studio.model(), asked)
        out.update(style=asked, style_labels=labels)
    return out


def check_memory(value) -> dict:
    """{"memory": mode} when one is asked for (none or cache); left out: the model's default."""
    if value in (None, ""):
        return {}
    from ..memory import COMPOSING_MODES

    if value not in COMPOSING_MODES:
        raise UserError(f"memory must be one of {', '.join(COMPOSING_MODES)}, got {value!r}")
    return {"memory": value}


def _job_routes(app, studio) -> None:
    """Composing as a job: POST /api/generate, /api/generate_with_primer; GET /api/jobs/{id}."""
    from typing import Annotated, Optional

    from fastapi import File, Form, HTTPException, UploadFile

    from ..generate.options import LIMITS
    from .requests import JobCreated, generate_request, with_style_form

    GenerateRequest = generate_request(studio.max_seconds, studio.max_samples)
    max_upload_bytes = studio.max_upload_bytes

    def submit(params, primer=None) -> dict:
        try:
            return {"id": studio.submit(params, primer).id}
        except QueueFull:
            raise HTTPException(429, f"the studio is busy: {studio._queue.maxsize} jobs are already waiting; "
                                     "try again in a minute") from None
        except OutputFull as e:
            raise HTTPException(429, str(e)) from None

    @app.post("/api/generate", status_code=202, response_model=JobCreated, summary="Compose a piece")
    def generate(req: GenerateRequest):
        try:
            params = studio.check(req.seconds, req.temperature, req.top_p, req.seed, req.num_samples, req.form)
            params.update(check_style(studio, req))
            params.update(check_memory(req.memory))
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        return submit(params)

    @app.post("/api/generate_with_primer", status_code=202, response_model=JobCreated,
              summary="Compose a piece that continues the opening of an uploaded MIDI file")
    @with_style_form
    def generate_with_primer(
        primer: Annotated[UploadFile, File(description=f"a MIDI file (at most {max_upload_bytes / 2**20:g} MB)")],
        seconds: Annotated[float, Form()] = DEFAULTS["seconds"],
        temperature: Annotated[float, Form()] = DEFAULTS["temperature"],
        top_p: Annotated[float, Form()] = DEFAULTS["top_p"],
        seed: Annotated[Optional[int], Form()] = None,
        num_samples: Annotated[int, Form()] = DEFAULTS["num_samples"],
        primer_seconds: Annotated[float, Form(description="use the primer's first seconds")] = DEFAULTS[
            "primer_seconds"],
        guidance: Annotated[float, Form(**LIMITS["guidance"].pydantic())] = 1.0,
        form: Annotated[str, Form(max_length=16)] = DEFAULTS["form"],
        memory: Annotated[Optional[str], Form(max_length=16)] = None,
        **style,
    ):
        try:
            params = studio.check(seconds, temperature, top_p, seed, num_samples, form)
            params.update(check_style(studio, SimpleNamespace(guidance=guidance, **style)))
            params.update(check_memory(memory))
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


def _live_routes(app, studio) -> None:
    """Play along at once, no job: POST /api/continue, /api/duet (live.py)."""
    from fastapi import HTTPException

    from .requests import DuetRequest, continue_request

    ContinueRequest = continue_request(studio.max_seconds)
    studio_live = Live(studio)

    def live(call):
        try:
            return call()
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        except Busy:
            raise HTTPException(429, "the studio is answering someone else; try again in a moment") from None
        except OutputFull as e:
            raise HTTPException(429, str(e)) from None

    @app.post("/api/continue", summary="Answer what was played (play along)",
              description="Continues the played notes at once (no job) and answers the new notes on the "
                          "request's clock, `start` (where the answer's audio begins on that clock) and its "
                          "MIDI, WAV and MP3, which hold the answer alone.")
    def continue_playing(req: ContinueRequest):
        def call():
            style = check_style(studio, req)
            notes = check_notes([list(n) for n in req.notes])
            return studio_live.answer(notes, req.seconds, req.temperature, req.top_p, req.seed, **style)
        return live(call)

    @app.post("/api/duet", summary="Both parts of a play-along session as MIDI (two tracks), WAV and MP3")
    def duet(req: DuetRequest):
        def call():
            you = check_notes([list(n) for n in req.you], "you", allow_empty=True)
            model = check_notes([list(n) for n in req.model], "model", allow_empty=True)
            if not len(you) and not len(model):
                raise UserError("the duet has no notes")
            both = np.concatenate([you.onset, model.onset, you.offset, model.offset])
            if both.max() - both.min() > 10 * MAX_SPAN_SECONDS:
                raise UserError(f"a duet may span at most {10 * MAX_SPAN_SECONDS:g} s")
            t0 = both.min()  # the files start at the first note
            shift = [Notes(n.onset - t0, n.offset - t0, n.pitch, n.velocity) for n in (you, model)]
            return {"files": studio_live.duet(*shift)}
        return live(call)


def _info_routes(app, studio) -> None:
    """What the page reads and serves: limits, models, result files, the API docs, the page itself."""
    import asyncio

    from fastapi import HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from .requests import ModelChoice

    @app.get("/api/config", summary="Limits and defaults")
    def config():
        return {"max_seconds": studio.max_seconds, "max_samples": studio.max_samples,
                "max_upload_bytes": studio.max_upload_bytes, "max_primer_seconds": studio.max_primer_seconds,
                "max_queue": studio._queue.maxsize, "keep_jobs": studio.keep_jobs, "defaults": DEFAULTS,
                "max_output_mb": studio.max_output_bytes / 2**20,
                "min_temperature": MIN_TEMPERATURE, "max_temperature": MAX_TEMPERATURE, "min_top_p": MIN_TOP_P,
                "live": {"max_seconds": min(MAX_ANSWER_SECONDS, studio.max_seconds), "max_notes": MAX_NOTES,
                         "max_span_seconds": MAX_SPAN_SECONDS, "defaults": LIVE_DEFAULTS},
                "conditions": model_conditions(studio), "style_menus": conditions.menus(),
                "forms": list(STUDIO_FORMS), "memory": model_memory(studio),
                "finetune": app.state.teacher.limits()}

    @app.get("/api/models", summary="The models to compose with: the startup one and those in --models_dir")
    def models():
        return {"current": studio.model_name, "models": studio.models()}

    @app.post("/api/model", summary="Compose with this model from now on (answers its style values)")
    def choose_model(req: ModelChoice):
        try:
            name = studio.select(req.name)
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        return {"current": name, "conditions": model_conditions(studio)}

    @app.get("/files/{job_id}/{name}", summary="A result file (MIDI, WAV, MP3 or PNG)",
             description="A live answer's MP3 is encoded after the answer is sent: its URL waits for it "
                         f"(up to {PENDING_WAIT:g} s, holding no server thread), then answers 202 with "
                         "Retry-After while it is still being encoded.")
    async def result_file(job_id: str, name: str):
        # async, so a wait holds no worker thread: dozens of waits would otherwise starve every route
        event = studio.pending(job_id, name)
        deadline = time.monotonic() + PENDING_WAIT
        while event is not None and not event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if event is not None and not event.is_set():
            return JSONResponse({"detail": "this file is still being encoded; try again in a moment"},
                                status_code=202, headers={"Retry-After": "2"})
        path = studio.file(job_id, name)
        if path is None:
            raise HTTPException(404, "no such file")
        return FileResponse(path, media_type=MEDIA_TYPE[path.suffix], filename=f"{job_id[:8]}-{name}",
                            content_disposition_type="inline")

    @app.get("/docs", include_in_schema=False)
    def docs():
        # Swagger UI would load its scripts from a CDN: blank without internet. This page is
        # written from the same OpenAPI schema by the server itself.
        return HTMLResponse(api_page(app.openapi()))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")


def model_memory(studio) -> dict:
    """The memory modes the page offers and the model's default (its config.json `memory` block;
    none when the model cannot be loaded)."""
    from ..memory import COMPOSING_MODES, composing

    try:
        default = composing(studio.model(), None).mode
    except (UserError, OSError):
        default = "none"
    return {"modes": list(COMPOSING_MODES), "default": default}


def model_conditions(studio) -> dict:
    """The model's style values for the page's menus ({} when unconditioned or not loadable)."""
    try:
        vocab = studio.model().config.conditions
    except (UserError, OSError):
        return {}
    out = {name: [v for v in labels if v != conditions.ANY] for name, labels in vocab.items()}
    for name in list(out):
        display = conditions.BY_NAME[name].display if name in conditions.BY_NAME else None
        if display:  # composer_names: "chopin" -> "Frédéric Chopin"
            out[f"{name}_names"] = {v: display(v) for v in out[name]}
    return out


# -- the command ------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from ..piano import CREDIT

    p = sub.add_parser("serve", help="the browser studio: compose, listen and download on a local web page",
                       description=__doc__.split("\n\n")[0], epilog=CREDIT)
    p.add_argument("--host", default="127.0.0.1",
                   help="address or name to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to "
                        "the network). Requests must name it, or localhost, as their Host (DNS rebinding guard)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder or a file inside one (default: the model shipped in the package)")
    p.add_argument("--models_dir", type=Path, default=DEFAULT_MODELS_DIR,
                   help=f"checkpoint folders the page's model menu offers, e.g. from `finetune --out` "
                        f"(default {DEFAULT_MODELS_DIR}/)")
    p.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                   help=f"folder for results, one sub-folder per job (default {DEFAULT_OUTPUT_DIR})")
    p.add_argument("--keep_jobs", type=int, default=KEEP_JOBS,
                   help=f"result folders kept; older ones are deleted (default {KEEP_JOBS})")
    add_instrument_arguments(p)
    p.add_argument("--max_output_mb", type=float, default=MAX_OUTPUT_MB,
                   help=f"most megabytes all results may hold; past it the oldest finished go first, and a job "
                        f"that cannot fit is refused with 429 (default {MAX_OUTPUT_MB})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--open", action="store_true", help="open the studio in the web browser once it is up")
    cpu_threads.add_argument(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import uvicorn

    cpu_threads.apply(args.threads)
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
                     piano=args.piano, reverb=args.reverb, device=args.device, preload=True, host=args.host,
                     models_dir=args.models_dir, max_output_mb=args.max_output_mb)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"studio at http://{host}:{args.port}/  (API docs at /docs; results in {args.output_dir}; "
          "Ctrl+C stops)", flush=True)
    if args.open:
        _open_browser_when_up(args.host, args.port)
    # A signal stops it after in-flight requests, at most a few seconds later; the Server then
    # re-raises the signal, which cli.run turns into "stopped" (uvicorn.run would swallow it as a
    # KeyboardInterrupt and exit 0), and forked render workers die with us.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    uvicorn.Server(config).run()
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
