"""Write what a checkpoint should know of the corpus it learned from into its folder, in one pass:

- config.json's "opening_density" block: how densely the corpus's pieces open (conditions.density
  explains why a planned piece draws its density from it rather than trusting the model's pace);
- trained_on.txt: the content digest of every MIDI file, so `finetune` can say when a folder holds
  music the model has already learned.

    python recipes/training_corpus.py ../shared/data/classical-piano --split train \
        --checkpoint src/classical_music/pretrained/default

One density per piece (its files' onsets per second over their first 120 s, averaged), so a piece
with ten performances counts once. `finetune` writes both for the models it makes, from the
folder it learns.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classical_music import conditions  # noqa: E402
from classical_music.checkpoint import CONFIG_NAME, TRAINED_ON_NAME  # noqa: E402
from classical_music.data.sources import iter_folder  # noqa: E402
from classical_music.files import atomic_path  # noqa: E402
from classical_music.notes import MidiReadError, load_score, score_to_notes  # noqa: E402
from classical_music.train.finetune_data import digest, trained_on_text  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("--split", default=None, help="only this split of the corpus's metadata.csv (e.g. train)")
    p.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint folder to write into")
    args = p.parse_args(argv)
    per_piece: dict[str, list[float]] = {}
    digests = set()
    for sf in iter_folder(args.corpus):
        if args.split and (sf.split or "train") != args.split:
            continue
        digests.add(digest(sf.path))
        try:
            d = conditions.opening_density(score_to_notes(load_score(sf.path)).onset)
        except MidiReadError:
            continue
        if d is not None:
            per_piece.setdefault(sf.group or str(sf.path), []).append(d)
    block = conditions.opening_block(per_piece, f"{args.corpus.name}" + (f" {args.split} split" if args.split else ""))
    if block is None:
        print(f"{args.corpus}: fewer than 2 pieces to measure", file=sys.stderr)
        return 2
    path = args.checkpoint / CONFIG_NAME
    config = json.loads(path.read_text())
    config[conditions.OPENING_KEY] = block
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with atomic_path(args.checkpoint / TRAINED_ON_NAME) as tmp:
        tmp.write_bytes(trained_on_text(digests))
    print(f"{args.checkpoint}: opening densities of {block['pieces']} pieces (deciles {block['deciles']}); "
          f"{len(digests)} files in {TRAINED_ON_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
