"""The quick-start notebook runs top to bottom (with fewer training steps), so it never rots; the
stored copy carries its outputs, so it reads with audio and piano rolls on the web too."""

import base64
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from classical_music.generate import default_checkpoint  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes_and_leaves_no_temp_folder(tmp_path, monkeypatch):
    if not (default_checkpoint() / "model.safetensors").is_file():
        pytest.fail("the package ships no default model; the notebook composes with it")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the kernel's tempfile folder, watched below
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = nb.cells[1]
    assert "TRAIN_STEPS" in params.source
    params.source = "TRAIN_STEPS = 10\nN_FILES = 6\nSECONDS = 5\nFT_STEPS = 3"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes and "text/html" in mimes  # the piano roll and the audio player
    assert not list(temp.glob("quickstart-*"))
    printed = _printed(nb)
    for where in (str(temp), str(tmp_path), str(Path.cwd()), str(Path(__file__).resolve().parents[1])):
        assert where not in printed  # issue 27 item 16: no machine's absolute paths in what it shows


def _printed(nb) -> str:
    """Everything the notebook's cells printed or showed as text."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            out.append(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"]))
            out.append(str(o.get("data", {}).get("text/plain", "")))
            out += o.get("traceback", [])
    return "\n".join(out)


def test_the_stored_notebook_has_its_outputs_and_says_what_it_does():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    audio = [o["data"]["text/html"] for o in outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    # the shipped model's piece, Bach then Chopin (style), an ABA piece, and the tiny model's roll
    assert len(pngs) == 5 and len(audio) == 3 and all("audio/mpeg;base64," in a for a in audio)
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert NOTEBOOK.stat().st_size < 1.5e6
    # built from a clean state: no developer's folders, temporary folders or library paths in it
    printed = _printed(nb)
    assert not re.search(r"(/work/|/home/|/Users/|/tmp/|[A-Z]:\\\\|site-packages|\.py:\d+:)", printed), printed
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "about a minute" not in text and "One MIDI file" not in text and "20 files" in text
    assert "one composer against another" in text and "A whole piece: ABA" in text
