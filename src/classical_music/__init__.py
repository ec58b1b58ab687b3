"""Classical Music Creation: learn classical piano from MIDI with an LSTM and compose new pieces.

Pipeline, one module per stage:
    data/       MIDI folders or Aria-MIDI -> token cache (prepare), training windows (dataset)
    tokenizer/  notes <-> events (Performance RNN vocabulary, or REMI via MidiTok)
    model.py    Embedding -> stacked LSTM -> dropout -> linear
    checkpoint.py  checkpoint folders: config.json, model.safetensors, tokenizer.json, atomic saves
    decoding.py the one-step decoder generation runs (float32 or int8)
    train/      training loop, checkpoints, DDP
    generate/   sampling with carried LSTM state, primers
    audio.py    MIDI -> WAV/MP3 with a SoundFont
    plot.py     piano rolls
    evaluate.py likelihood of files (scoring.py: many files at once)
    compare/    a set of pieces against another: overlap area and KL per musical feature
    web/        the browser studio
    cli.py      the `classical-music` command
"""

__version__ = "0.1.0"
