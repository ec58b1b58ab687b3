"""Train the LSTM composer: a thin door into `classical_music.train` (see its docstring).

    python train.py --epochs 100 --batch_size 64 --save_dir checkpoints/
    torchrun --standalone --nproc_per_node=4 train.py --save_dir checkpoints/
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before `pip install -e .` too

from classical_music.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
