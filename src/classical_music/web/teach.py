"""Teach the studio's model your own MIDI from the page (issue 25): `classical-music finetune` as a
job. POST /api/finetune uploads a few MIDI files with a name; one fine-tune runs at a time, in its
own thread so composing goes on beside it, with progress; Cancel saves nothing. The model lands in
`--models_dir` as `finetune --out models/NAME` would write it, and the Model menu lists it.
"""

# No `from __future__ import annotations`: FastAPI must see the real types of teach_routes's parameters.

import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

MAX_TEACH_FILES = 200  # the folder of 20-200 pieces
MAX_TEACH_BYTES = 32 * 2**20  # all files of one upload together (each also at most max_upload_bytes)
MAX_TEACH_MINUTES = 10.0  # the page's budget: the CLI allows longer
DEFAULT_TEACH_MINUTES = 10.0
KEEP_LESSONS = 10  # finished fine-tunes the studio still answers about
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # a folder name in --models_dir, nothing more
_UPLOAD = ".teach-"  # working folders under the output folder (removed when the job ends)


class Busy(Exception):
    """A fine-tune is already running (one at a time: each takes every core for minutes)."""


class Exists(Exception):
    """--models_dir already holds a model of that name (the page never overwrites one)."""


@dataclass
class Lesson:
    id: str
    name: str
    minutes: float
    files: int
    folder: Path  # the uploaded files
    out: Path
    composer: str | None = None
    status: str = "running"  # running -> done | error | cancelled
    stage: str = "preparing"  # preparing (reading and scoring), training, saving, then the status
    progress: float = 0.0
    lines: list = field(default_factory=list)  # finetune's own messages, for API users
    result: dict | None = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None


def _sweep(models_dir: Path) -> None:
    """Working folders (.NAME.finetune) that no live fine-tune holds: left by a process killed mid-run."""
    from ..locks import LOCK_NAME, folder_lock

    for d in models_dir.glob(".*.finetune"):
        if not d.is_dir() or d.is_symlink():
            continue
        try:
            with folder_lock(d, "cleanup"):
                for sub in d.iterdir():
                    if sub.name != LOCK_NAME:
                        shutil.rmtree(sub, ignore_errors=True)
        except UserError:  # a live run holds it
            continue
        try:
            d.rmdir()
        except OSError:
            pass


def _safe_stem(name: str) -> str:
    stem = Path(name or "piece").stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60] or "piece"


class Teacher:
    """The studio's fine-tunes: at most one running, the last KEEP_LESSONS remembered."""

    def __init__(self, studio, options: dict | None = None):
        import torch

        # finetune sets PyTorch's threads for the whole process: to the studio's own (serve --threads)
        self.studio, self.options = studio, {"threads": torch.get_num_threads(), **(options or {})}
        self.lessons: dict[str, Lesson] = {}
        self._lock = threading.Lock()
        for stale in studio.output_dir.glob(f"{_UPLOAD}*"):  # left by a studio stopped mid-run
            shutil.rmtree(stale, ignore_errors=True)
        if studio.models_dir is not None and Path(studio.models_dir).is_dir():
            _sweep(Path(studio.models_dir))

    def running(self) -> Lesson | None:
        return next((x for x in list(self.lessons.values()) if x.status == "running"), None)

    def check_free(self) -> None:
        """Busy while a fine-tune runs (the route asks before an upload is read, start() again under the lock)."""
        if self.running() is not None:
            raise Busy("a fine-tune is already running: wait for it to finish or cancel it")

    def close(self, wait: float = 60.0) -> None:
        """The studio stops: a running fine-tune is cancelled (nothing saved, its folders removed)."""
        lesson = self.running()
        if lesson is not None:
            lesson.stop.set()
            if lesson.thread is not None:
                lesson.thread.join(wait)

    def limits(self) -> dict:
        running = self.running()
        return {"running": None if running is None else running.id, "available": self.studio.models_dir is not None,
                "max_files": MAX_TEACH_FILES, "max_bytes": MAX_TEACH_BYTES, "max_file_bytes": self.studio.max_upload_bytes,
                "max_minutes": MAX_TEACH_MINUTES, "default_minutes": DEFAULT_TEACH_MINUTES}

    def start(self, files: list, name: str, minutes: float, composer: str | None = None) -> Lesson:
        """files: [(file name, bytes)]. UserError for a bad request, Exists, Busy; else the job runs."""
        models_dir = self.studio.models_dir
        if models_dir is None:
            raise UserError("this studio keeps no models (start it with --models_dir)")
        if not NAME.fullmatch(name or ""):
            raise UserError("name must be 1-40 letters, digits, - or _, starting with a letter or digit")
        if not (isinstance(minutes, (int, float)) and 0 < minutes <= MAX_TEACH_MINUTES):
            raise UserError(f"minutes must be more than 0 and at most {MAX_TEACH_MINUTES:g}, got {minutes}")
        if name == self.studio.models()[0]["name"]:  # the menu lists the startup model under that name
            raise Exists(f"{name} is the name of the model the studio started with: choose another name")
        if composer is not None:
            from ..train.finetune import composer_key

            composer_key(composer)  # refused now rather than in the job
        if not files:
            raise UserError("no MIDI files were sent")
        if len(files) > MAX_TEACH_FILES:
            raise UserError(f"at most {MAX_TEACH_FILES} MIDI files at once, got {len(files)}")
        for fname, data in files:
            if data[:4] not in (b"MThd", b"RIFF"):
                raise UserError(f"{Path(fname or 'a file').name} is not a MIDI file (it should start with MThd)")
        out = Path(models_dir) / name
        if out.exists():
            raise Exists(f"a model named {name} already exists in the models folder: choose another name")
        lesson_id = uuid.uuid4().hex
        with self._lock:
            self.check_free()
            # the files' folder is what the model's card and menu call them: "NAME-upload"
            folder = self.studio.output_dir / f"{_UPLOAD}{lesson_id}" / f"{name}-upload"
            folder.mkdir(parents=True)
            lesson = Lesson(lesson_id, name, float(minutes), len(files), folder, out,
                            composer.strip() if composer else None)
            self.lessons[lesson_id] = lesson
            self._forget_old()
        try:
            for i, (fname, data) in enumerate(files):
                (folder / f"{i:03d}-{_safe_stem(fname)}.mid").write_bytes(data)
        except OSError as e:
            self._end(lesson, "error", f"cannot store the upload: {e.strerror or e}")
            raise UserError(lesson.error) from None
        lesson.thread = threading.Thread(target=self._run, args=(lesson,), name="studio-finetune", daemon=True)
        try:
            lesson.thread.start()
        except RuntimeError as e:
            self._end(lesson, "error", f"cannot start the fine-tune: {e}")
            raise UserError(lesson.error) from None
        return lesson

    def cancel(self, lesson_id: str) -> Lesson | None:
        lesson = self.lessons.get(lesson_id)
        if lesson is not None and lesson.status == "running":
            lesson.stop.set()
        return lesson

    def _run(self, lesson: Lesson) -> None:
        def progress(fraction):
            lesson.stage, lesson.progress = ("training", fraction) if fraction < 1 else ("saving", 1.0)

        def plain(text):  # finetune's words, the upload's working folder (a server path) named as what it is
            return str(text).replace(str(lesson.folder.parent), "the upload")

        try:
            from ..train.finetune import Cancelled, FinetuneConfig, finetune
            from ..train.finetune_card import summary_line

            checkpoint = self.studio.checkpoint  # the model the studio composes with is the one taught
            cfg = FinetuneConfig(folder=str(lesson.folder), out=str(lesson.out), minutes=lesson.minutes,
                                 composer=lesson.composer, init_from=str(checkpoint) if checkpoint else "default",
                                 uploaded=lesson.files,
                                 **{"no_progress": True, **self.options})
            try:
                r = finetune(cfg, log=lambda line: lesson.lines.append(plain(line)), progress=progress, stop=lesson.stop)
            except Cancelled:  # raised before anything is saved
                self._end(lesson, "cancelled")
                return
            held, ref = r["held_out"], r["reference"]
            lesson.result = {"summary": summary_line(r), "model": lesson.name,
                             "held_out": {"shipped": held["shipped"], "yours": held["yours"], "pieces": held["pieces"]},
                             "reference": {"shipped": ref.get("shipped"), "yours": ref.get("yours")},
                             "own_music": r.get("own_music") and {k: r["own_music"][k] for k in ("shipped", "yours")},
                             "kept_share": r.get("kept_share", 1.0),
                             "steps": r["steps"], "minutes": round(r["minutes"], 2), "stop_reason": r["stop_reason"],
                             "train_pieces": r["data"]["train_pieces"], "files": lesson.files,
                             "already_learned": r["data"]["already_learned"]}
            self._end(lesson, "done")
        except UserError as e:
            self._end(lesson, "error", plain(e))
        except Exception as e:  # the studio stays up; the log has the traceback
            log.exception("fine-tune %s failed", lesson.id)
            self._end(lesson, "error", f"fine-tuning failed: {type(e).__name__}")

    def _end(self, lesson: Lesson, status: str, error: str | None = None) -> None:
        shutil.rmtree(lesson.folder.parent, ignore_errors=True)
        lesson.error, lesson.finished = error, time.time()
        lesson.status = lesson.stage = status
        if status == "done":
            lesson.progress = 1.0

    def _forget_old(self) -> None:
        done = sorted((x for x in self.lessons.values() if x.finished is not None), key=lambda x: x.finished)
        for x in done[:max(0, len(done) - KEEP_LESSONS)]:
            self.lessons.pop(x.id, None)

    def describe(self, lesson: Lesson) -> dict:
        out = {"id": lesson.id, "name": lesson.name, "status": lesson.status, "stage": lesson.stage,
               "progress": round(lesson.progress, 4), "minutes": lesson.minutes, "files": lesson.files,
               "composer": lesson.composer, "created": lesson.created, "finished": lesson.finished,
               "log": list(lesson.lines)}
        if lesson.result is not None:
            out["result"] = lesson.result
        if lesson.error is not None:
            out["error"] = lesson.error
        return out


def teach_routes(app, studio, teacher) -> None:
    """Teach the model your MIDI (teach.py): POST /api/finetune, GET /api/finetune/{id}, POST .../cancel."""
    from typing import Annotated, List, Optional

    from fastapi import File, Form, HTTPException, UploadFile

    app.state.teacher = teacher

    @app.post("/api/finetune", status_code=202, summary="Fine-tune the current model on uploaded MIDI files",
              description="One at a time; the result is a model in --models_dir that the Model menu lists. "
                          "Poll GET /api/finetune/{id}; POST /api/finetune/{id}/cancel stops it and saves nothing.")
    def start_finetune(
        files: Annotated[List[UploadFile], File(description="MIDI files: a fifth of the pieces is held out")],
        name: Annotated[str, Form(max_length=40, description="the new model's folder name in --models_dir")],
        minutes: Annotated[float, Form()] = teacher.limits()["default_minutes"],
        composer: Annotated[Optional[str], Form(max_length=64)] = None,
    ):
        got, total = [], 0
        try:
            teacher.check_free()  # before 32 MB are read for nothing
            for f in files:
                data = f.file.read(studio.max_upload_bytes + 1)
                if len(data) > studio.max_upload_bytes:
                    raise HTTPException(413, f"{f.filename or 'a file'} is larger than "
                                             f"{studio.max_upload_bytes / 2**20:g} MB")
                total += len(data)
                if total > MAX_TEACH_BYTES:
                    raise HTTPException(413, f"a fine-tune's files are limited to {MAX_TEACH_BYTES / 2**20:g} MB in all")
                got.append((f.filename or "", data))
            lesson = teacher.start(got, name, minutes, composer or None)
        except UserError as e:
            raise HTTPException(422, str(e)) from None
        except Exists as e:
            raise HTTPException(409, str(e)) from None
        except Busy as e:
            raise HTTPException(429, str(e)) from None
        return {"id": lesson.id}

    def found(lesson_id):
        lesson = teacher.lessons.get(lesson_id)
        if lesson is None:
            raise HTTPException(404, "no such fine-tune (only the most recent ones are remembered)")
        return lesson

    @app.get("/api/finetune/{lesson_id}", summary="A fine-tune's stage, progress and before/after scores")
    def finetune_status(lesson_id: str):
        return teacher.describe(found(lesson_id))

    @app.post("/api/finetune/{lesson_id}/cancel", summary="Stop a fine-tune; nothing is saved")
    def finetune_cancel(lesson_id: str):
        found(lesson_id)
        return teacher.describe(teacher.cancel(lesson_id))
