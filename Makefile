# Two commands on a fresh machine:
#   make demo   set up .venv and compose a piece with the model shipped in the package
#   make test   set up .venv and run the test suite
# TORCH_SPEC pins the CPU build found on this project's machines; override it elsewhere, e.g.
#   make demo TORCH_SPEC="torch"     (any torch >= 2.3 works)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= outputs

.PHONY: setup demo test bench default-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/classical-music generate --output $(OUT)/first_piece.mid --seconds 30 --mp3 --wav --plot

test: setup
	$(BIN)/python -m pytest -q

# The recipe of the model shipped in the package (see MODEL_CARD.md): prepare the shared corpus,
# train with recipes/default_model.json (2,400 steps), then a second stage of 2,000 steps from
# those weights with a fresh optimizer at 1e-3; export float16 weights into the package and score.
CORPUS ?= ../shared/data/classical-piano
default-model: setup
	$(BIN)/classical-music data prepare $(CORPUS) --out data/prepared
	$(BIN)/python train.py --config recipes/default_model.json --data data/prepared --save_dir checkpoints/default
	$(BIN)/python train.py --config recipes/default_model.json --data data/prepared --save_dir checkpoints/default-continued \
		--init_from checkpoints/default/best --max_steps 2000 --lr 1e-3
	$(BIN)/python recipes/export_default_model.py checkpoints/default-continued/best

bench: setup
	$(BIN)/python bench/prepare.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
