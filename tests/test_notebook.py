"""The quick-start notebook runs top to bottom (with fewer training steps), so it never rots."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from classical_music.generate import default_checkpoint  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path):
    if not (default_checkpoint() / "model.safetensors").is_file():
        pytest.fail("the package ships no default model; the notebook composes with it")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = nb.cells[1]
    assert "TRAIN_STEPS" in params.source
    params.source = "TRAIN_STEPS = 10\nN_FILES = 6\nSECONDS = 5"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes and "text/html" in mimes  # the piano roll and the audio player
