"""Data stage: find MIDI files (a folder or Aria-MIDI), tokenize them into a cache, draw windows."""
