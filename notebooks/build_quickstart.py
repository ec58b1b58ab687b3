"""Writes notebooks/quickstart.ipynb (run from the repository root; then commit the notebook)."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
    md("# Classical Music Creation: quick start\n\n"
       "One MIDI file to an MP3, stage by stage: **prepare** a few files into a token cache, "
       "**train** a tiny LSTM for a minute, **compose** with the model shipped in the package, "
       "**listen** and look at the **piano roll**."),
    code("# Parameters (CI runs this notebook with fewer steps)\n"
         "TRAIN_STEPS = 150\n"
         "N_FILES = 20\n"
         "SECONDS = 20"),
    code("import tempfile\n"
         "from pathlib import Path\n\n"
         "from IPython.display import Audio, Image, display\n\n"
         "import classical_music\n"
         "from classical_music.data.prepare import PrepareConfig, prepare\n\n"
         "work = Path(tempfile.mkdtemp(prefix='quickstart-'))\n"
         "corpus = next((p / 'shared' / 'data' / 'classical-piano' for p in [Path.cwd(), *Path.cwd().parents]\n"
         "               if (p / 'shared' / 'data' / 'classical-piano').is_dir()), None)\n"
         "if corpus is None:  # no shared corpus here: write a few tiny pieces to learn from\n"
         "    import symusic\n"
         "    corpus = work / 'midi'\n"
         "    corpus.mkdir()\n"
         "    for k in range(N_FILES):\n"
         "        s = symusic.Score(480); t = symusic.Track(program=0)\n"
         "        for i in range(200):\n"
         "            t.notes.append(symusic.Note(i * 240, 220, 48 + k % 12 + (i * 5) % 24, 50 + (i * 13) % 60))\n"
         "        s.tracks.append(t); s.dump_midi(str(corpus / f'piece{k}.mid'))\n"
         "print('corpus:', corpus)"),
    md("## 1. Prepare\nParse, fold the sustain pedal into note lengths, tokenize into Performance RNN "
       "events and store them in a memory-mapped cache (`classical-music data prepare` does the same)."),
    code("report = prepare(PrepareConfig(source=corpus, out=work / 'cache', workers=2, limit=N_FILES, progress=False))\n"
         "print(report['prepared'], 'files,', f\"{report['events']:,}\", 'events in', report['seconds'], 's')\n"
         "from classical_music.data.dataset import WindowDataset\n"
         "ds = WindowDataset(work / 'cache', 'train', seq_len=64)\n"
         "x, y = ds[0]\n"
         "print(ds.tokenizer.describe(x[:16].tolist()))"),
    md("## 2. Train a tiny model\nThe same trainer as `python train.py`; a real model trains for hours "
       "(see MODEL_CARD.md), this one for about a minute."),
    code("from classical_music.train import main as train\n"
         "rc = train(['--data', str(work / 'cache'), '--save_dir', str(work / 'tiny'), '--max_steps', str(TRAIN_STEPS),\n"
         "            '--batch_size', '16', '--seq_len', '64', '--embed_size', '64', '--hidden_size', '128',\n"
         "            '--num_layers', '1', '--warmup_steps', '10', '--eval_every', '50', '--no_progress'])\n"
         "assert rc == 0, 'training failed'\n"
         "import json\n"
         "metrics = [json.loads(l) for l in (work / 'tiny' / 'metrics.jsonl').read_text().splitlines()]\n"
         "print('train loss', metrics[0]['train_loss'], '->', metrics[-1]['train_loss'])"),
    md("## 3. Compose with the model shipped in the package"),
    code("from classical_music.generate import GenerateConfig, compose\n"
         "piece = compose(GenerateConfig(output=work / 'piece.mid', seconds=SECONDS, temperature=0.95, seed=7,\n"
         "                               mp3=True, plot=True))[0]\n"
         "print(piece['notes'], 'notes,', round(piece['seconds'], 1), 's')\n"
         "display(Audio(filename=str(piece['files']['mp3'])))\n"
         "display(Image(filename=str(piece['files']['png'])))"),
    md("## 4. The tiny model, continuing a typed opening\nStill babbling after a minute of training: compare it with the shipped one."),
    code("tiny = compose(GenerateConfig(output=work / 'tiny.mid', checkpoint=work / 'tiny' / 'best', seconds=10, seed=1,\n"
         "                              primer_notes='C4 E4 G4, F4 A4 C5', plot=True))[0]\n"
         "print(tiny['notes'], 'notes')\n"
         "display(Image(filename=str(tiny['files']['png'])))"),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/quickstart.ipynb")
