#!/usr/bin/env bash
# End-to-end benchmark of vxtap against the kernel's VXLAN device and a raw veth, between two
# network namespaces on one machine. Run as root; `bash scripts/bench-netns.sh --help` explains it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/bench-netns.sh [--repeat N] [--duration S] [--zero-loss-trials N]
                                  [--zero-loss-seconds S] [--smoke] [--out DIR] [--bin PATH]

Measures vxtap end to end between two network namespaces and compares it with the Linux kernel's
VXLAN device and with the bare veth the tunnels run over. Needs root (namespaces, TAP, vxlan).

Topology: namespaces vxt-bench-<PID>-a and vxt-bench-<PID>-b joined by a veth pair "veth0",
underlay 198.18.0.1/24 (a) and 198.18.0.2/24 (b); the overlay is 198.19.0.1/24 (a) and
198.19.0.2/24 (b). Traffic flows from a (clients) to b (servers). One configuration after the
other on the same veth, each torn down before the next:
  veth           no tunnel (the ceiling): the overlay addresses directly on veth0
  kernel-vxlan   kernel vxlan device vx0 (VNI 42, port 4789, nolearning, all-zero FDB entry to
                 the peer; MTU 1450)
  vxtap-vxlan    vxtap run --proto vxlan in both namespaces (TAP vxt0, MTU 1450)
  vxtap-geneve   vxtap run --proto geneve in both namespaces (port 6081; needs no geneve module)
  vxtap-latency  vxtap run --proto vxlan --cpu-pinning: the latency mode (threads kept on their
                 CPUs, frames steered to the queue of their CPU)
  vxtap-nooffload  vxtap run --proto vxlan --no-offload: one frame per system call, the path
                 before TAP offloads, UDP GSO/GRO and batching (for the before/after comparison)

Per configuration:
  tcp1           iperf3 TCP, 1 stream, for S seconds: Gbit/s at the receiver, retransmits
  tcp4           iperf3 TCP, 4 streams (-P 4): Gbit/s at the receiver, retransmits
  udp64          iperf3 UDP, 64-byte payload, unlimited rate (-u -b 0 -l 64): packets/s delivered
                 at the receiver (kpps) and loss %
  udp64 zero-loss  RFC 2544-style throughput: the highest offered rate of 64-byte UDP payloads
                 that loses at most 0.1 %, found by a binary search over paced iperf3 trials
                 (-u -l 64 -b RATE -w 4M; --zero-loss-seconds each, at most --zero-loss-trials).
                 The first trial offers the rate the unpaced udp64 sender reached; each next one
                 offers the middle of the interval between the highest rate that passed (at
                 first 0) and the lowest that failed (what the sender really sent, if it fell
                 short of the rate asked), until the trials are spent or the interval is within
                 2 % of its upper end. Loss = 1 - received/sent (payload bytes at the server,
                 packets the client sent). The figure is the rate the best passing trial sent,
                 in kpps, marked "sender-bound" (^) when that trial's sender fell more than 5 %
                 short of the rate asked: the tunnel carried all iperf3 could send, so its
                 capacity is at least that. iperf3's socket buffers are 4 MB (-w; capped by
                 net.core.rmem_max/wmem_max) so that the receiving iperf3 being descheduled on a
                 busy machine does not count as tunnel loss; iperf3 paces in bursts every 1 ms
                 (its default pacing timer). The veth row is the harness's own ceiling.
  rtt            ping -i 0.01 -c 200: average and p99 (nearest rank) of the per-packet times, us;
                 and ping -A -c 1000 (back to back: the next ping as soon as the reply is in):
                 the average, us
  cpu            user+system CPU seconds of both vxtap processes (all threads, /proc/PID/stat)
                 during tcp1, per 1e9 bytes received; "-" for veth and kernel-vxlan
  syscalls       system calls that moved packets in both vxtap processes (TAP reads and writes,
                 socket sends and receives: the rx_syscalls and tx_syscalls counters) during
                 tcp1, per 1e9 bytes received
The table (stdout) shows the median of each figure over the runs and, in brackets, its ratio to
kernel-vxlan; RTT cells also show the difference to the kernel in microseconds.

Options:
  --repeat N     run the whole sequence of configurations N times; report medians (default 1)
  --duration S   seconds per iperf3 test (default 10)
  --zero-loss-trials N   paced trials of the zero-loss search per configuration (default 7;
                 0 skips the search)
  --zero-loss-seconds S  seconds per zero-loss trial (default 3)
  --smoke        fast CI variant: 1-second iperf3 tests, 20 pings, a zero-loss search of two
                 1-second trials (a coarse figure: the unpaced rate or half of it); only checks
                 that every configuration moved traffic in every test (figures are printed but
                 not judged)
  --out DIR      where to write results (default: results/<date-time>/ in the repository):
                   results.json  every run's figures, problems and vxtap counters, the medians,
                                 the ratios to kernel-vxlan, date, uname -r, git HEAD, nproc
                   chart.svg     grouped bars of tcp1, tcp4 and udp64 normalised to kernel-vxlan
                   raw/runN/CONFIG/  iperf3 JSON, ping output, CPU samples, vxtap logs and stats,
                                 device and UDP counters around the UDP test (udp-diag.txt)
  --bin PATH     vxtap binary (default target/release/vxtap; built with
                 `cargo build --release` if that default is missing)
  -h, --help     this text

Exit status: 0 if every test of every configuration delivered traffic (in every run), 1 if one
delivered nothing (the table and results are still written), 2 on a usage or setup error,
130/143 when interrupted (everything it started is removed in any case).
iperf3 is installed with apt-get if missing. Helper: scripts/bench_chart.py (parsing, table, SVG).
EOF
}

exec 3>&2  # the script's stderr, for messages from places where fd 2 is redirected (traps)
die() { echo "bench-netns: $*" >&3; exit 2; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&3; }

ORIG_ARGS="$*"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER="$SCRIPT_DIR/bench_chart.py"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

REPEAT=1 DURATION=10 SMOKE=0 OUT="" BIN="" ZL_TRIALS=7 ZL_SECONDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) [ $# -ge 2 ] || die "--repeat needs a value"; REPEAT=$2; shift 2 ;;
    --repeat=*) REPEAT=${1#*=}; shift ;;
    --duration) [ $# -ge 2 ] || die "--duration needs a value"; DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --zero-loss-trials) [ $# -ge 2 ] || die "--zero-loss-trials needs a value"; ZL_TRIALS=$2; shift 2 ;;
    --zero-loss-trials=*) ZL_TRIALS=${1#*=}; shift ;;
    --zero-loss-seconds) [ $# -ge 2 ] || die "--zero-loss-seconds needs a value"; ZL_SECONDS=$2; shift 2 ;;
    --zero-loss-seconds=*) ZL_SECONDS=${1#*=}; shift ;;
    --smoke) SMOKE=1; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a value"; BIN=$2; shift 2 ;;
    --bin=*) BIN=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (seconds)"
[[ $ZL_TRIALS =~ ^[0-9]+$ ]] || die "--zero-loss-trials must be a non-negative integer"
[[ $ZL_SECONDS =~ ^[1-9][0-9]*$ ]] || die "--zero-loss-seconds must be a positive integer (seconds)"
PINGS=200
ZL_LOSS_PCT=0.1  # the loss a zero-loss trial may have (RFC 2544 asks for none; iperf3 counts exactly)
if [ "$SMOKE" = 1 ]; then DURATION=1 PINGS=20 ZL_TRIALS=$((ZL_TRIALS < 2 ? ZL_TRIALS : 2)) ZL_SECONDS=1; fi
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, TAP and vxlan devices)"

# Paths given on the command line are relative to the caller's directory.
if [ -n "$BIN" ]; then
  BIN=$(realpath -m -- "$BIN")
  [ -x "$BIN" ] || die "--bin $BIN: no such executable"
else
  BIN="$REPO/target/release/vxtap"
  if [ ! -x "$BIN" ]; then
    log "$BIN missing: cargo build --release"
    (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
  fi
fi
if [ -n "$OUT" ]; then
  OUT=$(realpath -m -- "$OUT")
else
  OUT="$REPO/results/$(date +%Y%m%d-%H%M%S)"
  [ ! -e "$OUT" ] || OUT="$OUT-$$"
fi

for cmd in ip bridge ping ss python3 timeout; do
  command -v "$cmd" >/dev/null || die "$cmd is required"
done
ensure_tools || die "could not install iperf3 or create /dev/net/tun"

mkdir -p "$OUT/raw" || die "cannot create $OUT"

TAG="vxt-bench-$$"
NS_A="$TAG-a" NS_B="$TAG-b"
U_A=198.18.0.1 U_B=198.18.0.2   # underlay
O_A=198.19.0.1 O_B=198.19.0.2   # overlay
IPERF_PORT=5201
TMP=$(mktemp -d "/tmp/$TAG.XXXXXX")
VX_PIDS=()   # the running vxtap processes (a, b)
VX_SOCKS=()  # their control sockets

install_cleanup   # from scripts/lib.sh: removes every process and namespace on exit

# run_wait CMD...: run CMD in the background and wait for it, so that Ctrl-C/TERM reach the trap
# at once instead of after the command; returns CMD's status.
run_wait() {
  local p rc=0
  start_bg "$@"; p=$LAST_PID
  wait "$p" || rc=$?
  forget_pid "$p"
  return "$rc"
}
# wait_exit PID SECS: wait up to SECS for PID to exit by itself, then stop it; returns its status.
wait_exit() {
  local p=$1 secs=$2 i
  for ((i = 0; i < secs * 20; i++)); do alive "$p" || break; sleep 0.05; done
  stop_pid "$p" 2
}

# ---- topology --------------------------------------------------------------------------------
setup_underlay() {
  local ns
  for ns in "$NS_A" "$NS_B"; do
    [ ! -e "/run/netns/$ns" ] || die "namespace $ns already exists"
    netns_add "$ns" || die "ip netns add $ns failed"
  done
  ip -n "$NS_A" link add veth0 type veth peer name veth0 netns "$NS_B"
  ip -n "$NS_A" addr add "$U_A/24" dev veth0
  ip -n "$NS_B" addr add "$U_B/24" dev veth0
  ip -n "$NS_A" link set veth0 up
  ip -n "$NS_B" link set veth0 up
  local i
  for ((i = 0; i < 20; i++)); do
    ip netns exec "$NS_A" ping -n -q -c 1 -W 1 "$U_B" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "underlay $U_A -> $U_B does not answer"
}

setup_veth() {
  ip -n "$NS_A" addr add "$O_A/24" dev veth0 && ip -n "$NS_B" addr add "$O_B/24" dev veth0
}
teardown_veth() {
  ip -n "$NS_A" addr del "$O_A/24" dev veth0 2>/dev/null
  ip -n "$NS_B" addr del "$O_B/24" dev veth0 2>/dev/null
  ip -n "$NS_A" neigh flush dev veth0 2>/dev/null
  ip -n "$NS_B" neigh flush dev veth0 2>/dev/null
  return 0
}

kernel_vtep() {  # ns local remote overlay-address
  ip -n "$1" link add vx0 type vxlan id 42 dstport 4789 local "$2" dev veth0 nolearning &&
    bridge -n "$1" fdb append 00:00:00:00:00:00 dev vx0 dst "$3" &&
    ip -n "$1" addr add "$4/24" dev vx0 &&
    ip -n "$1" link set vx0 up
}
setup_kernel-vxlan() { kernel_vtep "$NS_A" "$U_A" "$U_B" "$O_A" && kernel_vtep "$NS_B" "$U_B" "$U_A" "$O_B"; }
teardown_kernel-vxlan() {
  ip -n "$NS_A" link del vx0 2>/dev/null
  ip -n "$NS_B" link del vx0 2>/dev/null
  return 0
}

# vxtap_up DIR PROTO [ARGS...]: one vxtap per namespace, waits for "ready" in both logs.
vxtap_up() {
  local dir=$1 proto=$2 side ns loc rem addr sock logf p i
  shift 2
  for side in a b; do
    if [ $side = a ]; then ns=$NS_A loc=$U_A rem=$U_B addr=$O_A; else ns=$NS_B loc=$U_B rem=$U_A addr=$O_B; fi
    sock="$TMP/vxtap-$proto-$side.sock" logf="$dir/vxtap-$side.log"
    start_bg ip netns exec "$ns" "$BIN" run --dev vxt0 --vni 42 --proto "$proto" \
      --local "$loc" --remote "$rem" --address "$addr/24" --control "$sock" "$@" >"$logf" 2>&1
    VX_PIDS+=("$LAST_PID") VX_SOCKS+=("$sock")
  done
  for i in 0 1; do
    p=${VX_PIDS[$i]} logf="$dir/vxtap-$([ $i = 0 ] && echo a || echo b).log"
    local n
    for ((n = 0; n < 300; n++)); do
      grep -qw ready "$logf" && break
      alive "$p" || { echo "vxtap ($logf) exited before ready: $(tail -n 3 "$logf" | tr '\n' ' ')"; return 1; }
      sleep 0.05
    done
    grep -qw ready "$logf" || { echo "vxtap ($logf) not ready after 15 s"; return 1; }
  done
}
vxtap_down() {  # DIR: SIGTERM both, record a bad exit or a TAP left behind
  local dir=$1 i p rc ns
  for i in "${!VX_PIDS[@]}"; do
    p=${VX_PIDS[$i]} rc=0
    stop_pid "$p" 5 || rc=$?
    [ "$rc" = 0 ] || echo "vxtap pid $p exited with status $rc after SIGTERM" >>"$dir/error.txt"
  done
  for ns in "$NS_A" "$NS_B"; do
    if ip -n "$ns" link show vxt0 >/dev/null 2>&1; then
      echo "TAP vxt0 still present in $ns after vxtap exited; deleted" >>"$dir/error.txt"
      ip -n "$ns" link del vxt0 2>/dev/null || true
    fi
  done
  VX_PIDS=() VX_SOCKS=()
}
setup_vxtap-vxlan() { vxtap_up "$1" vxlan; }
setup_vxtap-geneve() { vxtap_up "$1" geneve; }
teardown_vxtap-vxlan() { vxtap_down "$1"; }
teardown_vxtap-geneve() { vxtap_down "$1"; }
setup_vxtap-latency() { vxtap_up "$1" vxlan --cpu-pinning; }
teardown_vxtap-latency() { vxtap_down "$1"; }
setup_vxtap-nooffload() { vxtap_up "$1" vxlan --no-offload; }
teardown_vxtap-nooffload() { vxtap_down "$1"; }

# ---- measurements ----------------------------------------------------------------------------
stats_sample() {  # TAG DIR: each vxtap's counters as DIR/tcp1-stats-TAG-{a,b}.json
  local i
  for i in "${!VX_SOCKS[@]}"; do
    timeout 5 "$BIN" stats --control "${VX_SOCKS[$i]}" --json \
      >"$2/tcp1-stats-$1-$([ "$i" = 0 ] && echo a || echo b).json" 2>/dev/null || true
  done
}
cpu_sample() {  # TAG FILE: "TAG PID UTIME STIME" per vxtap process
  local p rest
  for p in "${VX_PIDS[@]}"; do
    rest=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # fields after "pid (comm) ": state=1 ... utime=12 stime=13 (fields 14 and 15 of stat)
    awk -v t="$1" -v p="$p" '{print t, p, $12, $13}' <<<"$rest" >>"$2"
  done
}

# netdiag TAG FILE: device counters and the UDP MIB of both namespaces, to see where packets of
# the UDP test were dropped (kept in raw/ for reading, not parsed).
netdiag() {
  local ns
  for ns in "$NS_A" "$NS_B"; do
    {
      echo "=== $1 $ns"
      ip -n "$ns" -s link show 2>&1
      ip netns exec "$ns" grep '^Udp:' /proc/net/snmp 2>&1
    } >>"$2"
  done
}

# iperf DIR NAME [iperf3 client args...]: server in b (-1), client in a, both JSON.
iperf() {
  local dir=$1 name=$2 srv i rc=0
  shift 2
  start_bg ip netns exec "$NS_B" iperf3 -s -1 -B "$O_B" -p "$IPERF_PORT" -J \
    >"$dir/$name-server.json" 2>"$dir/$name-server.err"
  srv=$LAST_PID
  for ((i = 0; i < 100; i++)); do
    ip netns exec "$NS_B" ss -Hltn "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && break
    sleep 0.05
  done
  [ "$name" != tcp1 ] || [ ${#VX_PIDS[@]} = 0 ] || { echo "clk_tck $(getconf CLK_TCK)" >"$dir/cpu.txt"; stats_sample before "$dir"; cpu_sample before "$dir/cpu.txt"; }
  run_wait timeout -k 5 $((DURATION + 40)) ip netns exec "$NS_A" iperf3 -c "$O_B" -p "$IPERF_PORT" \
    -t "$DURATION" --connect-timeout 5000 -J "$@" >"$dir/$name.json" 2>"$dir/$name.err" || rc=$?
  [ "$name" != tcp1 ] || [ ${#VX_PIDS[@]} = 0 ] || { cpu_sample after "$dir/cpu.txt"; stats_sample after "$dir"; }
  [ "$rc" = 0 ] || echo "iperf3 client ($name) exited with status $rc" >>"$dir/error.txt"
  wait_exit "$srv" 10 || true
  # The client's JSON carries the server's numbers too; keep only the files that say something.
  [ -s "$dir/$name-server.err" ] || rm -f "$dir/$name-server.err"
  [ -s "$dir/$name.err" ] || rm -f "$dir/$name.err"
  case $name in udp|zl-*) ;; *) rm -f "$dir/$name-server.json" ;; esac
}

# zero_loss DIR: the binary search of the udp64 zero-loss figure (see --help), after the unpaced
# UDP test whose sender rate is its first offer. One line per trial in DIR/zero-loss.txt:
# "TRIAL REQUESTED_PPS SENT_PPS RECEIVED_PPS LOSS_PCT pass|fail|error".
zero_loss() {
  local dir=$1 lo=0 hi rate k sent recv loss verdict
  : >"$dir/zero-loss.txt"
  hi=$(python3 "$HELPER" sent-pps "$dir/udp.json") || hi=0
  if ! [[ $hi =~ ^[0-9]+$ ]] || [ "$hi" -le 0 ]; then
    echo "zero-loss search skipped: the unpaced UDP test reported no sender rate" >>"$dir/error.txt"
    return 0
  fi
  rate=$hi
  for ((k = 1; k <= ZL_TRIALS; k++)); do
    log "    udp64 zero-loss trial $k/$ZL_TRIALS: $((rate / 1000)) kpps (${ZL_SECONDS}s)"
    DURATION=$ZL_SECONDS iperf "$dir" "zl-$k" -u -l 64 -b $((rate * 64 * 8)) -w 4M
    read -r sent recv loss verdict < <(python3 "$HELPER" trial "$dir" "zl-$k" "$ZL_LOSS_PCT") ||
      sent=0 recv=0 loss=- verdict=error
    echo "$k $rate $sent $recv $loss $verdict" >>"$dir/zero-loss.txt"
    case $verdict in
      pass)
        lo=$rate
        # The sender could not make the rate asked of it: higher offers cannot offer more.
        [ $((sent * 100)) -ge $((rate * 95)) ] || break ;;
      # Lost too much at what the sender really offered (the sender may fall short of the rate).
      fail) hi=$((sent > 0 && sent < rate ? sent : rate)) ;;
      *) break ;;  # no result: the problem is in error.txt
    esac
    # Done when the first offer passes, or the interval is within 2 % of its upper end.
    [ "$lo" -lt "$hi" ] && [ $(((hi - lo) * 100)) -gt $((hi * 2)) ] || break
    rate=$(((lo + hi) / 2))
  done
}

measure() {  # DIR
  local dir=$1 rc=0
  log "    tcp1 (${DURATION}s)"; iperf "$dir" tcp1
  log "    tcp4 (${DURATION}s)"; iperf "$dir" tcp4 -P 4
  log "    udp64 (${DURATION}s)"
  netdiag before "$dir/udp-diag.txt"
  iperf "$dir" udp -u -b 0 -l 64
  netdiag after "$dir/udp-diag.txt"
  [ "$ZL_TRIALS" = 0 ] || zero_loss "$dir"
  log "    ping x$PINGS"
  run_wait timeout -k 5 60 ip netns exec "$NS_A" ping -n -i 0.01 -c "$PINGS" -W 2 "$O_B" \
    >"$dir/ping.txt" 2>&1 || rc=$?
  # ping exits 1 when replies are missing: the loss shows in the figures
  [ "$rc" = 0 ] || [ "$rc" = 1 ] || echo "ping exited with status $rc" >>"$dir/error.txt"
  log "    ping -A x$((PINGS * 5)) (back to back)"
  rc=0
  run_wait timeout -k 5 60 ip netns exec "$NS_A" ping -n -A -c "$((PINGS * 5))" -W 2 "$O_B" \
    >"$dir/ping-b2b.txt" 2>&1 || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 1 ] || echo "ping -A exited with status $rc" >>"$dir/error.txt"
}

wait_overlay() {  # up to 10 s for the first overlay ping (ARP, FDB learning)
  local deadline=$((SECONDS + 10))
  while [ "$SECONDS" -lt "$deadline" ]; do
    ip netns exec "$NS_A" ping -n -q -c 1 -W 1 "$O_B" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

run_config() {  # RUN CONFIG
  local n=$1 cfg=$2 dir
  dir="$OUT/raw/run$n/$cfg"
  mkdir -p "$dir"
  log "run $n/$REPEAT: $cfg"
  # (no command substitution here: the setup must run in this shell to keep the vxtap PIDs)
  if "setup_$cfg" "$dir" >"$TMP/setup.err" 2>&1; then
    if wait_overlay; then
      measure "$dir"
    else
      echo "no overlay connectivity: ping $O_A -> $O_B unanswered for 10 s" >>"$dir/error.txt"
    fi
  else
    echo "setup failed: $(tr '\n' ' ' <"$TMP/setup.err")" >>"$dir/error.txt"
  fi
  local i f
  for i in "${!VX_SOCKS[@]}"; do
    f="$dir/stats-$([ "$i" = 0 ] && echo a || echo b).json"
    if ! timeout 5 "$BIN" stats --control "${VX_SOCKS[$i]}" --json >"$f" 2>"$TMP/stats.err"; then
      echo "vxtap stats --control ${VX_SOCKS[$i]} failed: $(tr '\n' ' ' <"$TMP/stats.err")" >>"$dir/error.txt"
      rm -f "$f"
    fi
  done
  "teardown_$cfg" "$dir"
  log "  $cfg: $(python3 "$HELPER" summary "$dir" | tr '\n' ' ')"
}

# ---- main ------------------------------------------------------------------------------------
log "vxtap $BIN; results in $OUT; ${REPEAT} run(s), iperf3 ${DURATION}s, $PINGS pings, zero-loss search $ZL_TRIALS x ${ZL_SECONDS}s$([ "$SMOKE" = 1 ] && echo ', smoke')"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
setup_underlay
for ((run = 1; run <= REPEAT; run++)); do
  for cfg in veth kernel-vxlan vxtap-vxlan vxtap-geneve vxtap-latency vxtap-nooffload; do
    run_config "$run" "$cfg"
  done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
rc=0
python3 "$HELPER" report --out "$OUT" --repeat "$REPEAT" $([ "$SMOKE" = 1 ] && echo --smoke) \
  --meta "date=$(date -Iseconds)" \
  --meta "kernel=$(uname -r)" \
  --meta "git_head=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --meta "nproc=$(nproc)" \
  --meta "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
  --meta "iperf3=$(iperf3 --version 2>/dev/null | head -n 1)" \
  --meta "vxtap_bin=$BIN" \
  --meta "loadavg_start=$LOAD_START" \
  --meta "loadavg_end=$LOAD_END" \
  --meta "duration_s=$DURATION" \
  --meta "pings=$PINGS" \
  --meta "zero_loss_trials=$ZL_TRIALS" \
  --meta "zero_loss_seconds=$ZL_SECONDS" \
  --meta "zero_loss_max_loss_pct=$ZL_LOSS_PCT" \
  --meta "repeat=$REPEAT" \
  --meta "smoke=$([ "$SMOKE" = 1 ] && echo true || echo false)" \
  --meta "command=$0 $ORIG_ARGS" || rc=$?
exit "$rc"
