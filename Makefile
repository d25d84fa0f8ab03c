# podium's single entry point. Every target works on a fresh Debian/Ubuntu machine as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-venv python3-dev gcc libcap-dev libseccomp-dev busybox-static \
	iproute2 nftables runc crun procps docker-registry skopeo
STAMP := $(VENV)/.installed

.PHONY: FORCE setup test test-unit test-integration demo runtime-demo bench lint clean

setup: $(STAMP)

# Installs the Debian packages of $(1) that are missing (more apt-get options: $(2)),
# so that a second run is quick.
define apt_missing
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) \
			$$missing >/dev/null; \
	fi
endef

# setuptools' import finder for an editable install, which every Python start in the
# venv would load (~15 ms). pyproject.toml's package-dir makes pip write a plain path
# entry instead; a venv made before that still has the finder and is reinstalled.
FINDER_GLOB := $(VENV)/lib/python3*/site-packages/__editable___podium_*_finder.py

$(STAMP): pyproject.toml $(if $(wildcard $(FINDER_GLOB)),FORCE)
	$(call apt_missing,$(APT_PACKAGES),)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@if ls $(FINDER_GLOB) >/dev/null 2>&1; then \
		echo "setup: podium was installed with an import finder: see package-dir in pyproject.toml" >&2; \
		exit 1; \
	fi
	@# Byte-compile once: podium-runtime imports its modules on every command, and
	@# PYTHONDONTWRITEBYTECODE would otherwise leave them compiled from source each time.
	$(PY) -m compileall -q runtime proto >/dev/null
	@touch $(STAMP)

# The whole suite: unit and integration tests, then the VM tier (tests/vm).
test: setup vm-setup
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q -m vm tests/vm

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

demo: setup
	bash deploy/demo.sh

runtime-demo: setup
	bash deploy/runtime-demo.sh

bench: setup
	$(PY) -m compileall -q runtime >/dev/null
	$(PY) bench/container_start.py

lint: setup
	$(PY) -m ruff check runtime agent client proto/kube.py proto/documents.py tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info

# Base images, built here from Debian's packages (no registry needed); see deploy/images.sh.
.PHONY: busybox-image python-image
busybox-image: setup
	bash deploy/images.sh busybox

python-image: setup
	bash deploy/images.sh python

# The VM tier alone: Debian 12 guests under QEMU (software emulation), pure cgroup v2
# (tests/vm). The guest image is built on first use and cached in /var/cache/podium-vm.
.PHONY: test-vm vm-setup
VM_PACKAGES := qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio
vm-setup:
	$(call apt_missing,$(VM_PACKAGES),--no-install-recommends)

test-vm: setup vm-setup
	$(PY) -m pytest -q -m vm tests/vm
