# fls-sweeps. `make help` lists the targets. Every target sets up what it needs itself:
# a virtualenv in .venv with the pinned packages of requirements.lock (seconds when done).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.installed
STUDY ?= demo
RUN_ROOT ?= runs
# Hydra overrides appended to the demo's commands, e.g. DEMO_ARGS="total_timesteps=4096"
DEMO_ARGS ?=
PYTEST_ARGS ?=

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.DEFAULT_GOAL := help
.PHONY: help setup demo study paper saliency-demo posthoc-demo readme-numbers test test-slow test-all test-slurm slurm-up slurm-down sweep-status \
        table2 table3 table4 table5 stats poi fig3 fig4 fig5 fig6 fig7 scatter analysis bench bench-models bench-learning clean-venv

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(SETUP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	# torch first, alone: this machine's pinned CPU build (any other spec pulls CUDA wheels)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $@

setup: $(SETUP) ## create .venv with the pinned dependencies (idempotent)

EXPERIMENT ?= demo
# where the cells run (conf/launcher/); unset: local, for a study small enough for this machine
LAUNCHER ?=
# WAIT=1: on SLURM too, run the stages one after the other here instead of submitting the chain
WAIT ?=
study: $(SETUP) ## a whole study of conf/experiment/ (EXPERIMENT=demo LAUNCHER=local|submitit_local|slurm; on SLURM: submitted as one job chain, WAIT=1 waits)
	$(PY) -m studies.study --experiment "$(EXPERIMENT)" $(if $(LAUNCHER),--launcher "$(LAUNCHER)") $(if $(WAIT),--wait) --run-root "$(RUN_ROOT)" $(if $(strip $(DEMO_ARGS)),-- $(DEMO_ARGS))

paper: ## the paper's whole study: training, Tables 3-5 (Table 4 needs ATARI_HEAD_ROOT), every figure (LAUNCHER=slurm)
	$(MAKE) study EXPERIMENT=paper

ZOO_AGENTS ?= breakout_nature_cnn,breakout_sparse_fls,breakout_sparse_fls_first_conv
ZOO_FILMED ?= breakout_sparse_fls_first_conv
demo: $(SETUP) ## the main job: a small Breakout study on CPU (make study EXPERIMENT=demo), then the trained zoo agents beside it
	$(MAKE) study EXPERIMENT=demo
	@echo "--- is FLS free? the demo's probability of improvement over Nature CNN, with its 95% CI (docs/statistics.md)"
	$(PY) -m analysis poi --study demo --run-root "$(RUN_ROOT)"
	@echo "--- the trained agents of zoo/ (zoo/README.md), evaluated the same way"
	$(PY) src/evaluate.py -m zoo=$(ZOO_AGENTS) eval.games=4 eval.num_envs=4 "run_root=$(RUN_ROOT)"
	$(PY) -m analysis table3 --study zoo --run-root "$(RUN_ROOT)"
	$(PY) src/evaluate.py -m zoo=$(ZOO_FILMED) video=true "run_root=$(RUN_ROOT)"
	@echo "--- the saliency video and contact sheet of the agent whose own map follows the ball: where the lines above say (ZOO_FILMED=breakout_sparse_fls_first_conv,breakout_sparse_fls films more)"

saliency-demo: $(SETUP) ## Table 4 on the Atari-HEAD sample: train a small Ms. Pac-Man Sparse FLS cell, score it against human gaze
	$(PY) src/train.py experiment=demo study=saliency_demo game=mspacman model=sparse_fls seed=1 "run_root=$(RUN_ROOT)" $(DEMO_ARGS)
	$(PY) src/saliency.py experiment=demo study=saliency_demo game=mspacman model=sparse_fls seed=1 "run_root=$(RUN_ROOT)" \
	    'saliency.resolutions=[210x160,84x84]' 'saliency.frame_alignments=[spec,paper]' $(DEMO_ARGS)
	$(PY) -m analysis table4 --study saliency_demo --run-root "$(RUN_ROOT)"

POSTHOC_MAPS ?= [model,jacobian,integrated_gradients,gradcam,greydanus,greydanus_value]
posthoc-demo: saliency-demo ## Table 4 with post-hoc maps: a Nature CNN cell beside saliency-demo's, every map of both scored on the sample
	$(PY) src/train.py experiment=demo study=saliency_demo game=mspacman model=nature_cnn seed=1 "run_root=$(RUN_ROOT)" $(DEMO_ARGS)
	$(PY) src/saliency.py -m experiment=demo study=saliency_demo game=mspacman model=nature_cnn,sparse_fls seed=1 "run_root=$(RUN_ROOT)" \
	    'saliency.maps=$(POSTHOC_MAPS)' 'saliency.resolutions=[210x160,84x84]' 'saliency.frame_alignments=[spec,paper]' $(DEMO_ARGS)
	$(PY) -m analysis table4 --study saliency_demo --run-root "$(RUN_ROOT)"

# The numbers the README shows are these commands' output, kept in docs/demo/ (tests/test_readme.py
# holds the README to them; its slow twin reruns this and compares)
README_RUNS ?= runs/readme
README_NUMBERS ?= docs/demo
readme-numbers: $(SETUP) ## rerun the commands whose numbers the README shows (demo, saliency-demo, posthoc-demo) into README_RUNS and keep their tables in docs/demo/
	@test ! -e "$(README_RUNS)" || { echo "error: README_RUNS=$(README_RUNS) exists; remove it or name another folder (the numbers come from fresh runs)" >&2; exit 2; }
	mkdir -p "$(README_NUMBERS)"
	$(MAKE) study EXPERIMENT=demo RUN_ROOT="$(README_RUNS)"
	cp "$(README_RUNS)/demo/analysis/table3.md" "$(README_NUMBERS)/demo_table3.md"
	cp "$(README_RUNS)/demo/analysis/poi.md" "$(README_NUMBERS)/demo_poi.md"
	cp "$(README_RUNS)/demo/analysis/poi.png" "$(README_NUMBERS)/demo_poi.png"
	$(MAKE) saliency-demo RUN_ROOT="$(README_RUNS)"
	cp "$(README_RUNS)/saliency_demo/analysis/table4.md" "$(README_NUMBERS)/saliency_demo_table4.md"
	$(MAKE) posthoc-demo RUN_ROOT="$(README_RUNS)"
	cp "$(README_RUNS)/saliency_demo/analysis/table4.md" "$(README_NUMBERS)/posthoc_demo_table4.md"

test: $(SETUP) ## the default test suite (what CI runs), one worker per core
	$(PY) -m pytest -n auto --dist worksteal --durations=15 $(PYTEST_ARGS)

test-slow: $(SETUP) ## the slow tests (longer real runs, torch.compile)
	$(PY) -m pytest -n auto -m slow $(PYTEST_ARGS)

test-all: $(SETUP) ## every test but the SLURM ones
	$(PY) -m pytest -n auto -m "not slurm" $(PYTEST_ARGS)

ARTEFACTS := table2 table3 table4 table5 stats poi fig3 fig4 fig5 fig6 fig7 scatter
$(ARTEFACTS): $(SETUP)
	$(PY) -m analysis $@ --study "$(STUDY)" --run-root "$(RUN_ROOT)"
table2: ## Table 2: architectures and parameter counts, from the model registry
table3: ## Table 3: evaluation scores of STUDY (make table3 STUDY=demo)
table4: ## Table 4: saliency metrics on Atari-HEAD of STUDY
table5: ## Table 5: Breakout vs BreakoutInfinite of STUDY
stats: ## interval estimates of STUDY: aggregate scores, P(model > Nature CNN), performance profiles, sample efficiency
poi: ## is FLS free? P(model > Nature CNN) of STUDY with 95% CIs, a table and rliable's interval plot
fig3: ## Figure 3: reward curves of STUDY, one panel per game
fig4: ## Figure 4: saliency maps on the game screen, two frames per game x model of STUDY
fig5: ## Figure 5: an Atari-HEAD frame per game with each model's map and the human fixations
fig6: ## Figure 6: reward curves of the Sparse FLS variants of STUDY
fig7: ## Figure 7: reward curves of the other ablations of STUDY
scatter: ## Figures 8-14: every evaluated game of STUDY at (length, score), one figure per game

analysis: $(SETUP) ## every artefact of STUDY
	$(PY) -m analysis all --study "$(STUDY)" --run-root "$(RUN_ROOT)"

bench: $(SETUP) ## throughput ratios (trainer vs env, dense FLS update, metrics, analysis of a 75-cell study), < 10 min
	$(PY) -m bench

bench-models: $(SETUP) ## forward+backward time of every model, as ratios to Nature CNN
	$(PY) bench/bench_models.py

CLEANRL ?=
GAME ?= breakout
SEEDS ?= 3
FIRST_SEED ?= 1
STEPS ?= 300000
bench-learning: $(SETUP) ## ours vs CleanRL's ppo_atari.py, GAME x SEEDS x STEPS (CLEANRL=<checkout of vwxyzjn/cleanrl>; ~1 h here)
	$(PY) -m bench.learning --game $(GAME) --seeds $(SEEDS) --first-seed $(FIRST_SEED) --steps $(STEPS) $(if $(CLEANRL),--cleanrl "$(CLEANRL)") $(foreach f,$(ADD),--add "$(f)")

slurm-up: ## start a one-node SLURM with accounting here (root; installs slurm-wlm, munge, MariaDB if missing)
	cluster/slurm-local/up.sh

slurm-down: ## stop the local SLURM and remove its state (.slurm/)
	cluster/slurm-local/down.sh

test-slurm: $(SETUP) slurm-up ## the SLURM tests (pytest -m slurm) on the local one-node SLURM
	SLURM_CONF=$(CURDIR)/.slurm/etc/slurm.conf $(PY) -m pytest -m slurm $(PYTEST_ARGS)

STATUS_ARGS ?=
sweep-status: $(SETUP) ## every cell and stage of STUDY: done/running/queued/waiting/failed, the ETA (STATUS_ARGS=--resubmit-failed, --cancel)
	$(PY) -m studies.status --study "$(STUDY)" --run-root "$(RUN_ROOT)" $(STATUS_ARGS)

clean-venv: ## remove .venv (runs/ is never touched)
	rm -rf $(VENV)
