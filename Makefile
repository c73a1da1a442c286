# fosp: two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both install what they need first: system libraries for headless rendering (apt, when
# root), then a virtualenv in .venv with every Python dependency.

PYTHON ?= $(shell for p in python3.11 python3.12 python3.10 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' && echo $$p && break; done)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= runs/demo
# Debian packages for headless MuJoCo rendering (EGL on Mesa llvmpipe; OSMesa as fallback).
# libusb for pyrealsense2.
APT_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libusb-1.0-0

.PHONY: install system-deps test lint demo bench clean

install: $(STAMP)

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $$missing"; apt-get update -qq && apt-get install -y -qq $$missing; \
		else echo "warning: missing system packages ($$missing); install them for headless rendering"; fi; \
	fi

$(STAMP): setup.py setup.cfg pyproject.toml package.xml
	@test -n "$(PYTHON)" || { echo "need Python 3.10-3.12"; exit 1; }
	$(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so no later requirement can pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[ros,realsense,dev]'
	# setuptools as ROS 2 Humble (59.6) and Jazzy (68.1.2) ship it, for the colcon test
	$(PY) -m pip install -q --upgrade --target $(VENV)/setuptools-59.6 setuptools==59.6.0
	$(PY) -m pip install -q --upgrade --target $(VENV)/setuptools-68.1 setuptools==68.1.2
	# The ROS tree in install/ (symlinks to this checkout): `ros2 launch fosp_ros ...` and
	# `ros2 run` resolve with `export AMENT_PREFIX_PATH=$$PWD/install/fosp_ros:$$AMENT_PREFIX_PATH`
	$(PY) -m colcon --log-base $(VENV)/colcon-log build --symlink-install --base-paths . \
		--build-base build --install-base install >/dev/null
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q

# The FOSP story on the simulated twin, in image mode as on the robot (about 12 minutes on
# 2 cores): the paper's real-robot dataset mix with safe demonstrations of every layout
# (--cover-layouts), the shipped image model, evaluation, then safe fine-tuning on a task of
# the hard transfer suite (the camera moved) through the ROS 2 graph: camera frames from the
# simulated robot, shield, policy, learner, /fosp/finetune after each trajectory; a before /
# during / after report. The model was made by this project's own commands (listed in
# $(MODEL)/source.json) and follows its recipe (config/recipes); RETRAIN=1 runs them again
# on the demo's dataset (about 35 minutes on 2 cores). MODEL=models/fosp-safereach-image-paper
# runs the paper's recipe instead. The dataset is reused when complete; an interrupted
# collection is completed.
MODEL ?= models/fosp-safereach-image-safe-clone
DEMO_DATA ?= $(DEMO)/data-cover
DEMO_TASK ?= safereach-camera-moved
demo: install
	$(VENV)/bin/fosp collect --task safereach --mix real --episodes 200 --seed 0 \
		--cover-layouts --out $(DEMO_DATA)
	$(VENV)/bin/fosp dataset info $(DEMO_DATA) --plot $(DEMO)/returns.png
	@if [ -n "$(RETRAIN)" ]; then rm -rf $(DEMO)/pretrained $(DEMO)/pretrained-*; \
		echo "RETRAIN=1: rerunning the commands that made $(MODEL) on $(DEMO_DATA)"; \
		$(PY) -m fosp.shipped $(MODEL) --rerun $(DEMO_DATA) $(DEMO)/pretrained; \
	else echo "agent: the checkpoint shipped in $(MODEL) (RETRAIN=1 trains it again), made by:"; \
		$(PY) -m fosp.shipped $(MODEL); \
		rm -rf $(DEMO)/pretrained; cp -r $(MODEL) $(DEMO)/pretrained; fi
	$(VENV)/bin/fosp eval --run $(DEMO)/pretrained --task safereach --episodes 10
	rm -rf $(DEMO)/finetune
	$(VENV)/bin/fosp demo --run $(DEMO)/pretrained --data $(DEMO_DATA) --task $(DEMO_TASK) \
		--trajectories 5 --grad-steps 40 --eval-episodes 10 --out $(DEMO)/finetune
	@echo "plots: $(DEMO)/returns.png $(DEMO)/pretrained/rollout.png $(DEMO)/finetune/finetune.png"

bench: install
	$(PY) benchmarks/bench_env.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
