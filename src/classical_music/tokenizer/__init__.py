"""Tokenizers: ``performance`` (Performance RNN events, default) and ``remi`` (MidiTok REMI)."""

from .base import NAMES, TOKENIZER_FILE, Tokenizer, get_tokenizer, load_tokenizer

__all__ = ["NAMES", "TOKENIZER_FILE", "Tokenizer", "get_tokenizer", "load_tokenizer"]
