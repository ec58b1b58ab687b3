"""Writes notebooks/quickstart.ipynb, executed, so it reads with its outputs (audio, piano rolls)
on the web too. Run from the repository root, then commit the notebook:

    .venv/bin/python notebooks/build_quickstart.py

Executing takes about a minute on a CPU. It keeps the file small (a 15-second MP3, a few piano
rolls) and drops execution timings, so a rebuild only changes what the code printed.
"""

from pathlib import Path

import nbclient
import nbformat as nbf

HERE = Path(__file__).resolve().parent

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
    md("# Classical Music Creation: quick start\n\n"
       "A few MIDI files to an MP3, stage by stage: **prepare** 20 files into a token cache, "
       "**train** a tiny LSTM for a few seconds, **compose** with the model shipped in the package, "
       "**listen** and look at the **piano roll**, **fine-tune** the shipped model on a folder of your own. Everything happens in a temporary folder, "
       "removed at the end."),
    code("# Parameters (the test suite runs this notebook with fewer steps and files)\n"
         "TRAIN_STEPS = 150\n"
         "N_FILES = 20\n"
         "SECONDS = 15\n"
         "FT_STEPS = 30"),
    code("import os, tempfile, warnings\n"
         "from pathlib import Path\n\n"
         "from IPython.display import Audio, Image, display\n\n"
         "import classical_music\n"
         "from classical_music.data.prepare import PrepareConfig, prepare\n\n"
         "# warnings as one plain line, without the path of the library file that raised them\n"
         "warnings.formatwarning = lambda message, category, *args, **kwargs: f'{category.__name__}: {message}\\n'\n"
         "start = Path.cwd()\n"
         "corpus = next((p / 'shared' / 'data' / 'classical-piano' for p in [start, *start.parents]\n"
         "               if (p / 'shared' / 'data' / 'classical-piano').is_dir()), None)\n"
         "work = Path(tempfile.mkdtemp(prefix='quickstart-'))\n"
         "os.chdir(work)  # everything below is written here, and printed as short relative paths\n"
         "work = Path('.')\n"
         "if corpus is None:  # no shared corpus here: write a few tiny pieces to learn from\n"
         "    import symusic\n"
         "    corpus = Path('midi')\n"
         "    corpus.mkdir()\n"
         "    for k in range(N_FILES):\n"
         "        s = symusic.Score(480); t = symusic.Track(program=0)\n"
         "        for i in range(200):\n"
         "            t.notes.append(symusic.Note(i * 240, 220, 48 + k % 12 + (i * 5) % 24, 50 + (i * 13) % 60))\n"
         "        s.tracks.append(t); s.dump_midi(str(corpus / f'piece{k}.mid'))\n"
         "print('corpus:', corpus.name)"),
    md("## 1. Prepare\nParse the first `N_FILES` MIDI files, fold the sustain pedal into note lengths, "
       "tokenize into Performance RNN events and store them in a memory-mapped cache "
       "(`classical-music data prepare` does the same)."),
    code("report = prepare(PrepareConfig(source=corpus, out=work / 'cache', workers=2, limit=N_FILES, progress=False))\n"
         "print(report['prepared'], 'files,', f\"{report['events']:,}\", 'events in', report['seconds'], 's')\n"
         "from classical_music.data.dataset import WindowDataset\n"
         "ds = WindowDataset(work / 'cache', 'train', seq_len=64)\n"
         "x, y = ds[0]\n"
         "print(ds.tokenizer.describe(x[:16].tolist()))"),
    md("## 2. Train a tiny model\nThe same trainer as `python train.py`, here for `TRAIN_STEPS` steps of a "
       "1 × 128 LSTM: seconds, not minutes, on a CPU (3 s on an idle one). The shipped 3 × 512 model trained for 9 minutes on a GPU "
       "(see MODEL_CARD.md)."),
    code("import json, time\n"
         "from classical_music.train import main as train\n"
         "t0 = time.perf_counter()\n"
         "rc = train(['--data', str(work / 'cache'), '--save_dir', str(work / 'tiny'), '--max_steps', str(TRAIN_STEPS),\n"
         "            '--batch_size', '16', '--seq_len', '64', '--embed_size', '64', '--hidden_size', '128',\n"
         "            '--num_layers', '1', '--warmup_steps', '10', '--eval_every', '50', '--no_progress'])\n"
         "assert rc == 0, 'training failed'\n"
         "metrics = [json.loads(l) for l in (work / 'tiny' / 'metrics.jsonl').read_text().splitlines()]\n"
         "print(f'{TRAIN_STEPS} steps in {time.perf_counter() - t0:.0f} s; train loss',\n"
         "      metrics[0]['train_loss'], '->', metrics[-1]['train_loss'])"),
    md("## 3. Compose with the model shipped in the package"),
    code("from classical_music.generate import GenerateConfig, compose\n"
         "piece = compose(GenerateConfig(output=work / 'piece.mid', seconds=SECONDS, temperature=0.95, seed=5,\n"
         "                               mp3=True, plot=True))[0]\n"
         "print(piece['notes'], 'notes,', round(piece['seconds'], 1), 's')\n"
         "display(Audio(filename=str(piece['files']['mp3'])))\n"
         "display(Image(filename=str(piece['files']['png'])))"),
    md("## 4. Style: one composer against another\n"
       "The shipped model knows composers, periods, performance or sequenced, note density and key "
       "(`classical-music generate --list_conditions`). The same seed, asked for Bach and then Chopin:"),
    code("from classical_music import conditions\n"
         "from classical_music.compare import load_notes\n"
         "for who in ('bach', 'chopin'):\n"
         "    p = compose(GenerateConfig(output=work / f'{who}.mid', seconds=10, seed=5, composer=who,\n"
         "                               mp3=True, plot=True))[0]\n"
         "    n = load_notes(p['files']['midi'])\n"
         "    key = conditions.key_name(conditions.estimate_key(n.pitch, conditions.note_durations(n)))\n"
         "    print(f\"{who}: {p['notes']} notes, {p['notes'] / 10:.1f} notes/s, sounds like {key}\")\n"
         "    display(Audio(filename=str(p['files']['mp3'])))\n"
         "    display(Image(filename=str(p['files']['png'])))"),
    md("## 5. A whole piece: ABA\n"
       "`--form ABA` plans sections: A in a home key, B in a related key, softer, then A again, opening "
       "with A's first phrase; each section closes on a cadence and the piece on its home tonic "
       "(`classical-music generate --form ABA --seconds 120 --mp3 --plot`). The bands over the piano roll "
       "are the sections:"),
    code("whole = compose(GenerateConfig(output=work / 'aba.mid', seconds=4 * SECONDS, seed=5, form='ABA', key='G',\n"
         "                               plot=True))[0]\n"
         "for s in whole['plan']['sections']:\n"
         "    print(f\"{s['label']}: {s['seconds']:.1f} s in {s['key']}, {s['dynamics']}\")\n"
         "print('written beside the MIDI:', whole['files']['plan'].name)\n"
         "display(Image(filename=str(whole['files']['png'])))"),
    md("## 6. The tiny model, continuing a typed opening\n"
       "Still babbling after a few seconds of training: compare it with the shipped one."),
    code("tiny = compose(GenerateConfig(output=work / 'tiny.mid', checkpoint=work / 'tiny' / 'best', seconds=10, seed=1,\n"
         "                              primer_notes='C4 E4 G4, F4 A4 C5', plot=True))[0]\n"
         "print(tiny['notes'], 'notes')\n"
         "display(Image(filename=str(tiny['files']['png'])))"),
    md("## 7. Make it yours: fine-tune the shipped model on your own MIDI\n"
       "`classical-music finetune FOLDER --out models/NAME` (10 minutes by default) holds out a fifth of the "
       "folder's pieces, scores the shipped model on them, trains from it and keeps the best; the result is an "
       "ordinary checkpoint folder for `generate --checkpoint`, `evaluate` and `serve --models_dir models`. "
       "Here a few of the files above, for `FT_STEPS` steps:"),
    code("import shutil\n"
         "from classical_music.train.finetune import FinetuneConfig, finetune\n"
         "mine = Path('mine')\n"
         "mine.mkdir()\n"
         "for f in sorted(corpus.rglob('*.mid'))[:N_FILES]:\n"
         "    shutil.copy(f, mine / f.name)\n"
         "r = finetune(FinetuneConfig(folder=str(mine), out='models/mine', minutes=5, max_steps=FT_STEPS, batch_size=8,\n"
         "                            seq_len=128, threads=2, no_progress=True))\n"
         "yours = compose(GenerateConfig(output=work / 'mine.mid', checkpoint=work / 'models' / 'mine', seconds=SECONDS,\n"
         "                               seed=2))[0]\n"
         "print('composed with it:', yours['notes'], 'notes')"),
    md("## 8. Clean up\nThe pictures and the audio above live in the notebook now; the temporary folder goes."),
    code("import shutil\n"
         "work = Path.cwd()\n"
         "os.chdir(start)\n"
         "shutil.rmtree(work)\n"
         "print('removed the temporary folder')"),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}


def main() -> None:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in every rebuild's diff
    nb.metadata.get("language_info", {}).pop("version", None)
    nbf.write(nb, HERE / "quickstart.ipynb")
    print(f"wrote {HERE / 'quickstart.ipynb'} ({(HERE / 'quickstart.ipynb').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
