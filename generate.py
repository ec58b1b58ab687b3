"""Compose with a trained model: a thin door into `classical_music.generate`.

    python generate.py --checkpoint checkpoints/best --output generated_song.mid
    python generate.py --output generated_song.mid --mp3 --plot   # the model shipped in the package
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before `pip install -e .` too

from classical_music.generate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
