"""Write the digests of the MIDI files a checkpoint learned from beside it (trained_on.txt), so
`finetune` can say when a folder holds music the model has already learned.

    python recipes/trained_on.py ../shared/data/classical-piano --split train \
        --checkpoint src/classical_music/pretrained/default

(`finetune` writes its own: the base model's list and the files of the folder it learned from.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classical_music.checkpoint import TRAINED_ON_NAME  # noqa: E402
from classical_music.data.sources import iter_folder  # noqa: E402
from classical_music.files import atomic_path  # noqa: E402
from classical_music.train.finetune_data import digest, trained_on_text  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("--split", default=None, help="only this split of the corpus's metadata.csv (e.g. train)")
    p.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint folder to write it into")
    args = p.parse_args(argv)
    digests = {digest(sf.path) for sf in iter_folder(args.corpus)
               if not args.split or (sf.split or "train") == args.split}
    if not digests:
        print(f"{args.corpus}: no MIDI files", file=sys.stderr)
        return 2
    path = args.checkpoint / TRAINED_ON_NAME
    with atomic_path(path) as tmp:
        tmp.write_bytes(trained_on_text(digests))
    print(f"{path}: {len(digests)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
