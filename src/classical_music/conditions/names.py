"""Names read from metadata: composers (surname keys and their periods), periods and kinds, and the
folding every comparison uses."""

from __future__ import annotations

import re
import unicodedata

PERIODS = ("baroque", "classical", "romantic", "impressionist", "modern")
KINDS = ("performance", "sequenced")

# A checkpoint knows a composer when it had at least this much training music (written in
# config.json as composer_min_hours); below that an embedding would learn mostly noise.
COMPOSER_MIN_HOURS = 1.0


# surname key -> (display name, period). Covers every composer of the development corpus and the
# best-known piano composers of Aria-MIDI; a composer missing here still works, with an unknown
# period unless the metadata gives one.
COMPOSERS: dict[str, tuple[str, str]] = {
    "albeniz": ("Isaac Albéniz", "romantic"),
    "alkan": ("Charles-Valentin Alkan", "romantic"),
    "bach": ("Johann Sebastian Bach", "baroque"),
    "balakirev": ("Mily Balakirev", "romantic"),
    "bartok": ("Béla Bartók", "modern"),
    "beethoven": ("Ludwig van Beethoven", "classical"),
    "borodin": ("Alexander Borodin", "romantic"),
    "brahms": ("Johannes Brahms", "romantic"),
    "burgmueller": ("Friedrich Burgmüller", "romantic"),
    "busoni": ("Ferruccio Busoni", "romantic"),
    "chopin": ("Frédéric Chopin", "romantic"),
    "clementi": ("Muzio Clementi", "classical"),
    "couperin": ("François Couperin", "baroque"),
    "czerny": ("Carl Czerny", "classical"),
    "debussy": ("Claude Debussy", "impressionist"),
    "dussek": ("Jan Ladislav Dussek", "classical"),
    "dvorak": ("Antonín Dvořák", "romantic"),
    "faure": ("Gabriel Fauré", "romantic"),
    "field": ("John Field", "romantic"),
    "franck": ("César Franck", "romantic"),
    "gershwin": ("George Gershwin", "modern"),
    "glinka": ("Mikhail Glinka", "romantic"),
    "godowsky": ("Leopold Godowsky", "romantic"),
    "granados": ("Enrique Granados", "romantic"),
    "grieg": ("Edvard Grieg", "romantic"),
    "handel": ("George Frideric Handel", "baroque"),
    "haydn": ("Joseph Haydn", "classical"),
    "hummel": ("Johann Nepomuk Hummel", "classical"),
    "janacek": ("Leoš Janáček", "modern"),
    "joplin": ("Scott Joplin", "modern"),
    "kabalevsky": ("Dmitry Kabalevsky", "modern"),
    "liszt": ("Franz Liszt", "romantic"),
    "medtner": ("Nikolai Medtner", "modern"),
    "mendelssohn": ("Felix Mendelssohn", "romantic"),
    "messiaen": ("Olivier Messiaen", "modern"),
    "mompou": ("Federico Mompou", "modern"),
    "moszkowski": ("Moritz Moszkowski", "romantic"),
    "mozart": ("Wolfgang Amadeus Mozart", "classical"),
    "mussorgsky": ("Modest Mussorgsky", "romantic"),
    "poulenc": ("Francis Poulenc", "modern"),
    "prokofiev": ("Sergei Prokofiev", "modern"),
    "purcell": ("Henry Purcell", "baroque"),
    "rachmaninoff": ("Sergei Rachmaninoff", "romantic"),
    "rameau": ("Jean-Philippe Rameau", "baroque"),
    "ravel": ("Maurice Ravel", "impressionist"),
    "saint-saens": ("Camille Saint-Saëns", "romantic"),
    "satie": ("Erik Satie", "impressionist"),
    "scarlatti": ("Domenico Scarlatti", "baroque"),
    "schoenberg": ("Arnold Schoenberg", "modern"),
    "schubert": ("Franz Schubert", "romantic"),
    "schumann": ("Robert Schumann", "romantic"),
    "scriabin": ("Alexander Scriabin", "romantic"),
    "shostakovich": ("Dmitri Shostakovich", "modern"),
    "sinding": ("Christian Sinding", "romantic"),
    "smetana": ("Bedřich Smetana", "romantic"),
    "stravinsky": ("Igor Stravinsky", "modern"),
    "tchaikovsky": ("Pyotr Ilyich Tchaikovsky", "romantic"),
    "telemann": ("Georg Philipp Telemann", "baroque"),
    "weber": ("Carl Maria von Weber", "romantic"),
}
# Other spellings (after accents are stripped) -> surname key.
_ALIASES = {
    "burgmuller": "burgmueller", "rachmaninov": "rachmaninoff", "rachmaninow": "rachmaninoff",
    "rachmaninof": "rachmaninoff", "tchaikowsky": "tchaikovsky", "tschaikowsky": "tchaikovsky",
    "tschaikovsky": "tchaikovsky", "chaikovsky": "tchaikovsky", "moussorgsky": "mussorgsky",
    "musorgsky": "mussorgsky", "mussorgski": "mussorgsky", "skrjabin": "scriabin", "scriabine": "scriabin",
    "skryabin": "scriabin", "schonberg": "schoenberg", "haendel": "handel",
    "saens": "saint-saens", "prokofieff": "prokofiev", "prokofjew": "prokofiev",
    "schostakowitsch": "shostakovich", "strawinsky": "stravinsky",
}
# Values that name no composer.
# A collection's folder names no composer either: piano-midi.de's "Christmas" holds carols by
# several composers, and became a composer named "christmas".
_NO_COMPOSER = {"", "unknown", "anonymous", "anon", "various", "traditional", "trad", "none", "nan", "n/a",
                "christmas", "xmas", "carols", "collection", "misc", "miscellaneous", "various composers"}


def fold(text: str) -> str:
    """Lower case, accents stripped, spaces collapsed: the form every comparison uses."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", text.replace("ß", "ss").casefold()).strip()


def normalize_composer(name) -> str | None:
    """The composer's surname key ("Chopin, Frédéric", "Frédéric Chopin", "chopin" -> "chopin"), or None."""
    if name is None:
        return None
    text = fold(name)
    if text in _NO_COMPOSER:
        return None
    if "," in text:  # "Surname, Given names"
        text = text.split(",", 1)[0]
    words = [w for w in re.split(r"[\s./]+", re.sub(r"[^\w\s./-]", "", text)) if w]
    if not words:
        return None
    key = words[-1].strip("-")
    if len(words) >= 2 and f"{words[-2]}-{key}" in COMPOSERS:  # "Saint Saens"
        key = f"{words[-2]}-{key}"
    return _ALIASES.get(key, key) or None


def composer_display(key: str) -> str:
    return COMPOSERS[key][0] if key in COMPOSERS else key.title()


_PERIOD_WORDS = {
    "baroque": "baroque", "classical": "classical", "classic": "classical", "classicism": "classical",
    "romantic": "romantic", "romanticism": "romantic", "late romantic": "romantic", "early romantic": "romantic",
    "impressionist": "impressionist", "impressionism": "impressionist", "impressionistic": "impressionist",
    "modern": "modern", "contemporary": "modern", "20th century": "modern", "twentieth century": "modern",
    "21st century": "modern", "post-romantic": "modern", "modernist": "modern", "modernism": "modern",
}


def normalize_period(value) -> str | None:
    if value is None:
        return None
    return _PERIOD_WORDS.get(fold(value).replace("_", " "))


def normalize_kind(value) -> str | None:
    if value is None:
        return None
    v = fold(value)
    if v in ("performance", "performed", "live", "transcription", "transcribed"):
        return "performance"
    if v in ("sequenced", "sequence", "score", "quantized", "quantised"):
        return "sequenced"
    return None


