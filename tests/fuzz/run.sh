#!/usr/bin/env bash
# Coverage-guided fuzzing of espd: the inbound packet path (libFuzzer, fuzz_decap.c), both
# config parsers (atheris, fuzz_config.py and fuzz_ios.py), the IKEv2 codec (atheris,
# fuzz_ike.py), the IKE exchange handlers of an established SA (atheris,
# fuzz_exchanges.py) and of IKE SAs with an exchange in flight: half-open responders,
# initiators awaiting a response (atheris, fuzz_pending.py). See docs/fuzzing.md.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]    SECONDS per target (default 60);
#                                              targets: decap config ios ike exchanges
#                                              pending (default: all)
#   tests/fuzz/run.sh 0 decap-cov              line coverage of native/ by the decap corpus
#                                              (seeds + work/decap), with llvm-cov
#
# For each target: build (installing clang/libFuzzer and atheris when missing), replay the
# regression inputs of tests/fuzz/regressions/TARGET, then fuzz for SECONDS, restarting
# after a crash until the time is used. New corpus entries go to tests/fuzz/work/TARGET
# (the seeds in tests/fuzz/corpus/TARGET are read, never written); crash, timeout and OOM
# inputs to tests/fuzz/crashes/TARGET. Prints executions, coverage (libFuzzer cov/ft),
# corpus size and crashes per target; exits 1 if a regression input or the campaign
# crashed.
#
# Environment: FUZZ_NATIVE (default native/) builds fuzz_decap from another copy of the
# C sources; FUZZ_BUILD (default tests/fuzz/build) holds binaries, logs and the atheris
# venv; FUZZ_PYTHON is the interpreter the venv is made from (default .venv/bin/python,
# else python3); FUZZ_ARGS adds libFuzzer flags to every campaign.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(decap config ios ike exchanges pending)
NATIVE=${FUZZ_NATIVE:-$ROOT/native}
BUILD=${FUZZ_BUILD:-$HERE/build}
WORK=$HERE/work
CRASHES=$HERE/crashes
REGRESSIONS=$HERE/regressions
FUZZ_ARGS=${FUZZ_ARGS:-}
MAX_RESTARTS=25
status=0

mkdir -p "$BUILD" "$WORK" "$CRASHES"

log() { printf '== %s\n' "$*"; }

# --- toolchains --------------------------------------------------------------------------

ensure_clang() {
	local probe="$BUILD/probe.c"
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$probe"
	if command -v clang >/dev/null && clang -fsanitize=fuzzer "$probe" -o "$BUILD/probe" 2>/dev/null &&
		[ -f /usr/include/openssl/evp.h ]; then
		return 0
	fi
	log "installing clang, libFuzzer and libssl-dev (Debian packages)"
	if [ "$(id -u)" != 0 ]; then
		echo "run.sh: need clang with libFuzzer and libssl-dev; run as root or install them" >&2
		exit 2
	fi
	apt-get update -qq || true
	local rt=libclang-rt-dev
	if command -v clang >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; then
		local major
		major=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
		apt-cache show "libclang-rt-$major-dev" >/dev/null 2>&1 && rt="libclang-rt-$major-dev"
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang "$rt" libssl-dev >/dev/null || exit 2
	clang -fsanitize=fuzzer "$probe" -o "$BUILD/probe" || { echo "run.sh: clang has no libFuzzer" >&2; exit 2; }
}

ensure_atheris() {
	local py=${FUZZ_PYTHON:-}
	if [ -z "$py" ]; then
		if [ -x "$ROOT/.venv/bin/python" ]; then py="$ROOT/.venv/bin/python"; else py=python3; fi
	fi
	if [ ! -x "$BUILD/venv/bin/python" ]; then
		log "creating $BUILD/venv (atheris) from $py"
		"$py" -m venv --system-site-packages "$BUILD/venv" || exit 2
	fi
	if ! "$BUILD/venv/bin/python" -c 'import atheris' 2>/dev/null; then
		log "installing atheris"
		ensure_clang # atheris builds from source with clang where no wheel fits
		CLANG_BIN=$(command -v clang) "$BUILD/venv/bin/python" -m pip install -q atheris || {
			echo "run.sh: atheris did not install" >&2
			exit 2
		}
	fi
}

# --- builds ------------------------------------------------------------------------------

CFLAGS=(-std=gnu11 -g -O1 -D_GNU_SOURCE -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter
	-fno-sanitize-recover=undefined -I"$NATIVE")

build_decap() {
	ensure_clang
	log "building fuzz_decap from $NATIVE"
	clang "${CFLAGS[@]}" -fsanitize=fuzzer,address,undefined "$HERE/fuzz_decap.c" "$NATIVE"/*.c \
		-lcrypto -lpthread -o "$BUILD/fuzz_decap" || return 1
	if [ -z "$(ls -A "$HERE/corpus/decap" 2>/dev/null)" ]; then
		clang "${CFLAGS[@]}" -DFUZZ_SEED_MAIN -fsanitize=address,undefined "$HERE/fuzz_decap.c" \
			"$NATIVE"/*.c -lcrypto -lpthread -o "$BUILD/make_seeds" || return 1
		mkdir -p "$HERE/corpus/decap"
		"$BUILD/make_seeds" "$HERE/corpus/decap" || return 1
	fi
}

# The command line of a target, without corpus directories.
target_cmd() {
	case $1 in
	decap) echo "$BUILD/fuzz_decap -max_len=4096" ;;
	config) echo "$BUILD/venv/bin/python $HERE/fuzz_config.py -dict=$HERE/dict/toml.dict -max_len=8192" ;;
	ios) echo "$BUILD/venv/bin/python $HERE/fuzz_ios.py -dict=$HERE/dict/ios.dict -max_len=8192" ;;
	ike) echo "$BUILD/venv/bin/python $HERE/fuzz_ike.py -max_len=4096" ;;
	exchanges) echo "$BUILD/venv/bin/python $HERE/fuzz_exchanges.py -dict=$HERE/dict/exchanges.dict -max_len=8192" ;;
	pending) echo "$BUILD/venv/bin/python $HERE/fuzz_pending.py -dict=$HERE/dict/pending.dict -max_len=8192" ;;
	*) return 1 ;;
	esac
}

# Source-based coverage of the C data plane by everything in the decap corpora.
decap_coverage() {
	local bin=$BUILD/fuzz_decap_cov prof=$BUILD/decap.profraw
	ensure_clang
	log "building fuzz_decap with coverage mapping"
	clang "${CFLAGS[@]}" -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
		"$HERE/fuzz_decap.c" "$NATIVE"/*.c -lcrypto -lpthread -o "$bin" || return 1
	mkdir -p "$WORK/decap"
	LLVM_PROFILE_FILE=$prof "$bin" -runs=0 "$WORK/decap" "$HERE/corpus/decap" >"$BUILD/decap-cov.log" 2>&1 || return 1
	llvm-profdata merge -sparse "$prof" -o "$BUILD/decap.profdata" || return 1
	llvm-cov report "$bin" -instr-profile="$BUILD/decap.profdata" \
		"$NATIVE"/esp_in.c "$NATIVE"/esp_out.c "$NATIVE"/ip.c "$NATIVE"/spd.c "$NATIVE"/replay.c \
		"$NATIVE"/crypto.c "$NATIVE"/sa.c "$NATIVE"/sad.c
	llvm-cov show "$bin" -instr-profile="$BUILD/decap.profdata" -format=text \
		-show-line-counts-or-regions "$NATIVE"/*.c >"$BUILD/decap-coverage.txt"
	log "annotated sources: ${BUILD#"$ROOT"/}/decap-coverage.txt"
}

# --- campaigns ---------------------------------------------------------------------------

# Replay every input of regressions/TARGET once; each must run clean (a known bug that is
# not fixed yet fails here, which is the point).
replay_regressions() {
	local t=$1 cmd f bad=0 n=0
	cmd=$(target_cmd "$t")
	[ -d "$REGRESSIONS/$t" ] || return 0
	for f in "$REGRESSIONS/$t"/*; do
		[ -f "$f" ] || continue
		case $f in *.md | *.txt) continue ;; esac
		n=$((n + 1))
		if ! PYTHONPATH="$ROOT/daemon:$HERE" $cmd -timeout=10 "$f" >"$BUILD/$t.regression.log" 2>&1; then
			echo "   REGRESSION FAILS: ${f#"$ROOT"/} (log: $BUILD/$t.regression.log)"
			bad=$((bad + 1))
		fi
	done
	log "$t: $n regression inputs, $bad failing"
	[ $bad -eq 0 ]
}

campaign() {
	local t=$1 cmd deadline now left runs=0 execs=0 rc cov=? ft=? corp=? before after log
	cmd=$(target_cmd "$t")
	mkdir -p "$WORK/$t" "$CRASHES/$t"
	log=$BUILD/$t.log
	: >"$log"
	before=$(find "$CRASHES/$t" -type f | wc -l)
	deadline=$(($(date +%s) + SECS))
	while :; do
		now=$(date +%s)
		left=$((deadline - now))
		[ $left -le 0 ] && break
		[ $runs -ge $MAX_RESTARTS ] && { echo "   stopped after $runs restarts"; break; }
		runs=$((runs + 1))
		# shellcheck disable=SC2086
		FUZZ_SUPPRESS_KNOWN=1 PYTHONPATH="$ROOT/daemon:$HERE" $cmd -max_total_time=$left -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix="$CRASHES/$t/" $FUZZ_ARGS \
			"$WORK/$t" "$HERE/corpus/$t" >>"$log" 2>&1
		rc=$?
		[ $rc -eq 0 ] && break
		grep -q 'Test unit written to' "$log" || { echo "   $t exited $rc without a crash input; see $log"; status=1; break; }
	done
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
	read -r cov ft corp < <(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 |
		sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+\/[0-9a-zA-Z]+).*/\1 \2 \3/')
	after=$(find "$CRASHES/$t" -type f | wc -l)
	printf '   %-7s %7ss  execs %-10s cov %-6s ft %-7s corpus %-12s runs %-3s new crashes %s\n' \
		"$t" "$SECS" "$execs" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$runs" "$((after - before))"
	grep -h -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|oracle failed|Uncaught Python exception|OracleViolation:|^[A-Za-z]*Error:' "$log" |
		cut -c1-220 | sort | uniq -c | sort -rn | head -10 | sed 's/^/     /'
	[ $after -eq $before ] || status=1
}

if [ "${TARGETS[*]}" = decap-cov ]; then
	decap_coverage
	exit $?
fi
for t in "${TARGETS[@]}"; do
	target_cmd "$t" >/dev/null || { echo "run.sh: unknown target $t (decap, config, ios, ike, exchanges, pending)" >&2; exit 2; }
done
for t in "${TARGETS[@]}"; do
	case $t in
	decap) build_decap || { echo "run.sh: fuzz_decap did not build" >&2; exit 2; } ;;
	*) ensure_atheris ;;
	esac
	replay_regressions "$t" || status=1
	campaign "$t"
done
log "logs in ${BUILD#"$ROOT"/}, crash inputs in ${CRASHES#"$ROOT"/}"
exit $status
