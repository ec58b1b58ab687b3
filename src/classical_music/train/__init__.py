"""Training the composer LSTM: `classical-music train`, `python train.py` (usage: command.py).

    command.py      the command line: flags, --config recipes, a resumed run's settings, main()
    config.py       TrainConfig (every setting of a run) and the learning-rate schedule
    loop.py         Trainer: data, model and optimizer, the training loop, validation
    metrics.py      metrics.jsonl, TensorBoard curves, log lines
    checkpoints.py  best/ and last/: saving, --resume, --init_from
    devices.py      --device, torchrun's process group, the hardware's name
    session.py      around the loop: a missing cache, a save dir in use, Ctrl-C, the time estimate
"""

from .command import add_arguments, add_parser, config_from_args, main, train
from .config import ENV_FIELDS, TrainConfig, lr_at
from .loop import Trainer

__all__ = [
    "ENV_FIELDS", "TrainConfig", "Trainer", "add_arguments", "add_parser", "config_from_args", "lr_at", "main",
    "train",
]
