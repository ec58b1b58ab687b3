"""Old path of classical_music.train.session, kept so `from classical_music import train_session` works."""

import sys

from .train import session

sys.modules[__name__] = session  # the same module object, so patching its names still takes effect
