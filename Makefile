# espd: build, test and benchmark. Every target installs what it needs itself.
#   make build      Debian packages (when missing), .venv, the package and its C data plane
#   make test       the test suite (root: includes the network-namespace tests)
#   make peers      the independent peers the IKE tests run against: strongSwan 5.9.8 (Debian),
#                   tshark, tcpdump, iperf3; strongSwan 6.0.6 built from SHARED (../shared)
#   make test-asan  the same suite against an ASan/UBSan build of the data plane
#   make demo       two gateways in network namespaces passing traffic through espd (root)
#   make bench      data-plane microbenchmarks (one core, medians, ratios to bare OpenSSL)
#   make bench-tunnel  espd vs wireguard-go vs strongSwan libipsec through namespaces (root)
#   make bench-ike   IKE SA setups/s: espd's engine vs charon as responder; bytes per IKE SA;
#                    packet rate through Child SA rekeys (root)
#   make bench-hub   a real espd as the hub of HUB_PEERS IKEv2 tunnels: start-up, time to
#                    establish, bytes per tunnel, traffic through a rekey load (root)
#   make bench-workers one espd draining a full TUN queue: 2 workers vs 1, end to end (root)
#   make fuzz       libFuzzer (inbound path), atheris (config parsers, IKE codec, IKE exchanges:
#                   established, half-open, initiator), FUZZ_SECONDS each
#   make soak       SOAK_MINUTES of traffic with reloads every second and restarts (root)
#   make install    espd in a venv from the system Python under PREFIX/lib/espd, the unit,
#                   man pages, completion, /etc/espd/espd.toml (PREFIX, DESTDIR, SYSCONFDIR,
#                   UNITDIR: default PREFIX/lib/systemd/system)
#   make uninstall  removes what make install put there (its manifest), nothing else
#   make deb        build/espd_VERSION_ARCH.deb (dpkg-deb over the same install), lintian

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
APT_PACKAGES := build-essential pkg-config libssl-dev iproute2 iputils-ping python3-venv python3-dev
STAMP := $(VENV)/.installed
# the team's shared folder (CI: a read-only copy beside the clone): strongSwan 6.0.6 source
SHARED ?= ../shared
# make bench-hub: the peer counts, one run each (the CPU per rekey compares the first and last)
HUB_PEERS ?= 10,10000

.PHONY: build deps peers demo test test-asan bench bench-tunnel bench-ike bench-hub bench-workers fuzz soak lint clean \
	wheelhouse install uninstall deb deb-deps promtool

build: $(STAMP)

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml setup.py native/build.py $(wildcard native/*.c native/*.h) | deps
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: build
	$(PY) -m espd demo

# root only: it installs Debian packages and builds into /opt/strongswan6
peers: deps
	@if [ "$$(id -u)" = 0 ]; then tests/support/install-peers.sh "$(SHARED)"; \
	else echo "make peers: not root, nothing installed (the strongSwan tests skip)"; fi

test: deb-deps build peers promtool
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-asan: deps
	@test -x $(PY) || python3 -m venv $(VENV)
	ESPD_SANITIZE=1 $(PY) -m pip install -q -e '.[test]'
	rm -f $(STAMP)
	status=0; \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
		$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests/unit tests/interop tests/native \
		|| status=$$?; \
	$(PY) -m pip install -q -e '.[test]' && touch $(STAMP); exit $$status

bench: build
	$(PY) tests/bench/bench_dataplane.py

bench-tunnel: build
	$(PY) tests/bench/bench_tunnel.py

bench-ike: build
	$(PY) tests/bench/bench_ike.py
	$(PY) tests/bench/bench_rekey.py
	$(PY) tests/bench/bench_hub_rekey.py

bench-hub: build
	$(PY) tests/bench/bench_hub.py --peers $(HUB_PEERS)

bench-workers: build
	$(PY) tests/bench/bench_workers_e2e.py

FUZZ_SECONDS ?= 600
fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

SOAK_MINUTES ?= 30
SOAK_ARGS ?=
soak: build
	$(PY) tests/soak/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

lint: build
	$(PY) -m ruff check daemon tests native/build.py packaging

# --- install and the Debian package ---
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?=
SYSTEM_PYTHON ?= /usr/bin/python3
WHEELHOUSE := build/wheelhouse
PKG_VENV := build/pkg-venv
DEB_APT_PACKAGES := lintian nftables conntrack
# Intel's libipsec-mb, the optional AEAD backend ([daemon] crypto_backend): amd64 only in
# Debian; without it the data plane builds on OpenSSL alone
IPSECMB_PACKAGES := $(if $(filter amd64,$(shell dpkg --print-architecture 2>/dev/null)),libipsec-mb-dev)
SOURCES := pyproject.toml setup.py native/build.py $(wildcard native/*.c native/*.h) \
	$(shell find daemon/espd -name '*.py')

# espd's wheel, built by the system Python with Debian's hardening flags, and the wheels of
# its PyPI dependencies: what both install paths put into their venv, without network.
$(WHEELHOUSE)/.stamp: $(SOURCES) | deps
	rm -rf $(WHEELHOUSE)
	@test -x $(PKG_VENV)/bin/pip || $(SYSTEM_PYTHON) -m venv $(PKG_VENV)
	eval "$$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)" && \
		$(PKG_VENV)/bin/pip wheel -q --wheel-dir $(WHEELHOUSE) .
	@touch $@

wheelhouse: $(WHEELHOUSE)/.stamp

install: wheelhouse
	$(SYSTEM_PYTHON) packaging/install.py install --destdir "$(DESTDIR)" --prefix "$(PREFIX)" \
		--sysconfdir "$(SYSCONFDIR)" --unitdir "$(UNITDIR)" --python "$(SYSTEM_PYTHON)" \
		--wheelhouse $(WHEELHOUSE)

uninstall:
	$(SYSTEM_PYTHON) packaging/install.py uninstall --destdir "$(DESTDIR)" --prefix "$(PREFIX)" \
		--sysconfdir "$(SYSCONFDIR)"

deb-deps:
	@missing=""; for p in $(DEB_APT_PACKAGES) $(IPSECMB_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

# promtool from Debian's prometheus package, unpacked into build/tools: the package itself
# would start a Prometheus server on install, and the tests only need its rule checker.
PROMTOOL := build/tools/usr/bin/promtool
$(PROMTOOL):
	mkdir -p build/tools/deb
	cd build/tools/deb && { apt-get download prometheus 2>/dev/null || \
		{ apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb --fsys-tarfile build/tools/deb/prometheus_*.deb | \
		tar -x -C build/tools ./usr/bin/promtool
	rm -rf build/tools/deb

promtool: $(PROMTOOL)

deb: wheelhouse deb-deps
	$(SYSTEM_PYTHON) packaging/build_deb.py --wheelhouse $(WHEELHOUSE) --out build --lintian

clean:
	rm -rf $(VENV) build *.egg-info daemon/*.egg-info daemon/espd/_native*.so daemon/espd/_native.c
