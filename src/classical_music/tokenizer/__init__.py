"""Tokenizers: ``performance`` (Performance RNN events, default) and ``remi`` (MidiTok REMI)."""

from .base import TOKENIZER_FILE, Tokenizer, get_tokenizer, load_tokenizer

__all__ = ["TOKENIZER_FILE", "Tokenizer", "get_tokenizer", "load_tokenizer"]
