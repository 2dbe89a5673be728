#!/usr/bin/env bash
# Soak test of vxtap: iperf3 through two VTEPs while the FDB churns and malformed datagrams
# arrive; fails if RSS or open fds grow or a VTEP dies. `bash scripts/soak.sh --help` explains it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/soak.sh [--duration SECS] [--out DIR] [--bin PATH] [--rate N]

Runs two vxtap VXLAN VTEPs (VNI 42) in namespaces vxt-soak-<PID>-a/-b joined by a veth:
underlay 198.18.0.1/24 (a) and 198.18.0.2/24 + 198.18.0.12/24 (b), overlay 198.19.0.1/24 (a)
and 198.19.0.2/24 (b). Needs root. For SECS seconds (default 600), all at once:
  traffic   iperf3 TCP from a to an iperf3 server bound to 198.19.0.2, in runs of up to 30 s
  FDB churn every second on VTEP a: `vxtap fdb add` of 3 random unicast MACs -> 198.18.0.2 and
            `vxtap fdb del` of the 3 oldest once 9 are in; and a flood-list remote 198.18.0.12
            (node b's second address) added one second, removed the next
  bad input from b, N datagrams/s (default 300) to 198.18.0.1:4789, half from 198.18.0.2 (a
            configured remote: parsed, then dropped) and half from 198.18.0.12 (drop_not_allowed
            while it is out of the flood list): truncated, no I flag, wrong VNI, short inner
            frame, random garbage (helper: scripts/soak_bad_datagrams.py)
  samples   every 10 s, per VTEP: VmRSS (kB) from /proc/PID/status, the number of entries in
            /proc/PID/fd (least of 3 reads, so a control connection being served is not counted),
            the thread count, and the send pool's sockets (`send_sockets` of `vxtap stats`: one
            per outer source port in use, bound as new inner flows appear, up to
            `send_sockets_max`), into DIR/samples.csv
Verdict (exit 1 on failure): samples from t >= 30 s are split in thirds; per VTEP, if the max of
the last third exceeds the max of the first third by more than 2048 kB of RSS, or by any
descriptor other than the send pool's (fds - send_sockets), it grew; the pool itself grows with
the flows by design and fails only past its bound (send_sockets > send_sockets_max). Also failing: a vxtap exiting (or not exiting 0 on SIGTERM at the end), a failed `vxtap fdb`
command, or iperf3 moving no data. With fewer than 3 samples after the warm-up (runs under
~50 s) growth is not judged (noted in the summary). Throughput is recorded, never judged.
The summary (stdout and DIR/summary.txt): duration, iperf3 bytes, RSS and fd first/last/max per
VTEP, and the non-zero drop counters of VTEP a from `vxtap stats --json`.

Options:
  --duration SECS  length of the soak (default 600)
  --out DIR        results directory (default results/soak-<date-time>/ in the repository):
                   samples.csv, summary.txt, vxtap-{a,b}.log, stats-{a,b}.json, iperf/*.json,
                   churn.log (failed fdb commands), bad-datagrams.json (what the sender sent)
  --bin PATH       vxtap binary (default target/release/vxtap, built if missing)
  --rate N         malformed datagrams per second (default 300)
  -h, --help       this text
Exit status: 0 pass, 1 fail, 2 usage or setup error, 130/143 interrupted. Everything started
(namespaces, processes, by PID) is removed on exit. iperf3 is installed with apt-get if missing.
EOF
}

die() { echo "soak: $*" >&2; exit 2; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
DURATION=600 OUT="" BIN="" RATE=300 INTERVAL=10 WARMUP=30
while [ $# -gt 0 ]; do
  case "$1" in
    --duration|--out|--bin|--rate) [ $# -ge 2 ] || die "$1 needs a value"; v=$2; k=$1; shift 2 ;;
    --duration=*|--out=*|--bin=*|--rate=*) v=${1#*=}; k=${1%%=*}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  case "$k" in --duration) DURATION=$v ;; --out) OUT=$v ;; --bin) BIN=$v ;; --rate) RATE=$v ;; esac
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (seconds)"
[[ $RATE =~ ^[0-9]+$ ]] || die "--rate must be a non-negative integer"
[ "$(id -u)" = 0 ] || die "must run as root"
if [ -z "$BIN" ]; then
  BIN="$REPO/target/release/vxtap"
  [ -x "$BIN" ] || (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
fi
BIN=$(realpath -- "$BIN") && [ -x "$BIN" ] || die "no vxtap binary at $BIN"
OUT=$(realpath -m -- "${OUT:-$REPO/results/soak-$(date +%Y%m%d-%H%M%S)}")
PY=$(python3 -c 'import sys; print(sys.executable)') || die "python3 is required"
ensure_tools || die "could not install iperf3 or create /dev/net/tun"
mkdir -p "$OUT/iperf" || die "cannot create $OUT"

NS_A="vxt-soak-$$-a" NS_B="vxt-soak-$$-b"
TMP=$(mktemp -d "/tmp/vxt-soak-$$.XXXXXX")
SOCK_A="$TMP/a.sock" SOCK_B="$TMP/b.sock"
install_cleanup   # from scripts/lib.sh: removes every process and namespace on exit

# ---- topology and processes --------------------------------------------------------------------
for ns in "$NS_A" "$NS_B"; do
  netns_add "$ns" || die "ip netns add $ns failed"
done
ip -n "$NS_A" link add veth0 type veth peer name veth0 netns "$NS_B"
ip -n "$NS_A" addr add 198.18.0.1/24 dev veth0
ip -n "$NS_B" addr add 198.18.0.2/24 dev veth0
ip -n "$NS_B" addr add 198.18.0.12/24 dev veth0
ip -n "$NS_A" link set veth0 up && ip -n "$NS_B" link set veth0 up
declare -A VX
for side in a b; do
  if [ $side = a ]; then ns=$NS_A l=1 r=2 s=$SOCK_A; else ns=$NS_B l=2 r=1 s=$SOCK_B; fi
  start_bg ip netns exec "$ns" "$BIN" run --dev vxt0 --vni 42 --local 198.18.0.$l \
    --remote 198.18.0.$r --address 198.19.0.$l/24 --control "$s" >"$OUT/vxtap-$side.log" 2>&1
  VX[$side]=$LAST_PID
done
for side in a b; do
  for ((i = 0; i < 300; i++)); do grep -qw ready "$OUT/vxtap-$side.log" && break; sleep 0.05; done
  grep -qw ready "$OUT/vxtap-$side.log" || die "vxtap $side not ready: $(tail -n 3 "$OUT/vxtap-$side.log")"
done
start_bg ip netns exec "$NS_B" iperf3 -s -B 198.19.0.2 >"$OUT/iperf/server.log" 2>&1
for ((i = 0; i < 100; i++)); do
  ip netns exec "$NS_A" ping -n -q -c 1 -W 1 198.19.0.2 >/dev/null 2>&1 && break; sleep 0.1
done
[ "$i" -lt 100 ] || die "no overlay connectivity 198.19.0.1 -> 198.19.0.2"
start_bg ip netns exec "$NS_B" "$PY" "$SCRIPT_DIR/soak_bad_datagrams.py" --to 198.18.0.1:4789 \
  --from 198.18.0.2 --from 198.18.0.12 --rate "$RATE" >"$OUT/bad-datagrams.json" 2>&1
BAD_PID=$LAST_PID

# ---- the soak loop: churn each second, an iperf3 run whenever none is running, samples --------
fdb() {
  timeout 5 "$BIN" fdb "$@" --control "$SOCK_A" >/dev/null 2>>"$OUT/churn.log" ||
    { FDB_FAIL=$((FDB_FAIL + 1)); echo "failed: vxtap fdb $*" >>"$OUT/churn.log"; }
  FDB_OPS=$((FDB_OPS + 1))
}
pool_sockets() {  # "send_sockets,send_sockets_max" of VTEP $1 (its stats), or "0,0"
  timeout 5 "$BIN" stats --control "$TMP/$1.sock" --json 2>/dev/null | "$PY" -c \
    'import json,sys; d=json.load(sys.stdin); print("%d,%d" % (d["send_sockets"], d["send_sockets_max"]))' \
    2>/dev/null || echo "0,0"
}
sample() {
  local row=$1 side p n best
  for side in a b; do
    p=${VX[$side]} best=""
    for _ in 1 2 3; do
      n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l || true)
      [ -n "$best" ] && [ "$best" -le "$n" ] || best=$n; sleep 0.02
    done
    row+=",$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0),$best"
    row+=",$(awk '/^Threads/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    row+=",$(pool_sockets "$side")"
  done
  echo "$row" >>"$OUT/samples.csv"
}
iperf_done() {  # stop (if need be) and reap the client run; add its bytes (received, else sent)
  local rc=0 b
  stop_pid "$IPERF_PID" 2 || rc=$?
  b=$("$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); r=j.get("end",{}).get("sum_received")
print(int(r["bytes"]) if r and r["bytes"] else sum(int(i["sum"]["bytes"]) for i in j.get("intervals",[])))' \
    "$OUT/iperf/run-$RUNS.json" 2>/dev/null || echo 0)
  BYTES=$((BYTES + b)); [ "$rc" = 0 ] || IPERF_FAIL=$((IPERF_FAIL + 1)); IPERF_PID=""
}
echo "t_s,a_rss_kb,a_fds,a_threads,a_pool,a_pool_max,b_rss_kb,b_fds,b_threads,b_pool,b_pool_max" >"$OUT/samples.csv"
log "soak ${DURATION}s, $RATE bad datagrams/s; results in $OUT"
FDB_OPS=0 FDB_FAIL=0 BYTES=0 RUNS=0 IPERF_FAIL=0 IPERF_PID="" NEXT_SAMPLE=0 FLOOD=0 DIED="" MACS=()
T0=$SECONDS
while :; do
  now=$((SECONDS - T0))
  for side in a b; do alive "${VX[$side]}" || DIED+=" $side"; done
  [ -z "$DIED" ] || { log "vxtap$DIED exited during the soak"; break; }
  if [ -n "$IPERF_PID" ] && ! alive "$IPERF_PID"; then iperf_done; fi
  left=$((DURATION - now))
  if [ -z "$IPERF_PID" ] && [ "$left" -ge 3 ]; then
    RUNS=$((RUNS + 1)); t=$((left < 30 ? left : 30))
    start_bg timeout -k 5 $((t + 30)) ip netns exec "$NS_A" iperf3 -c 198.19.0.2 -t "$t" \
      --connect-timeout 5000 -J >"$OUT/iperf/run-$RUNS.json" 2>&1
    IPERF_PID=$LAST_PID
  fi
  if [ "$now" -ge "$NEXT_SAMPLE" ]; then sample "$now"; NEXT_SAMPLE=$((NEXT_SAMPLE + INTERVAL)); fi
  [ "$now" -lt "$DURATION" ] || break
  for i in 1 2 3; do
    m=$(printf '02:%02x:%02x:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)) \
      $((RANDOM % 256)) $((RANDOM % 256)))
    fdb add "$m" 198.18.0.2; MACS+=("$m")
  done
  while [ ${#MACS[@]} -gt 9 ]; do fdb del "${MACS[0]}"; MACS=("${MACS[@]:1}"); done
  if [ "$FLOOD" = 0 ]; then fdb add 00:00:00:00:00:00 198.18.0.12; FLOOD=1
  else fdb del 00:00:00:00:00:00 198.18.0.12; FLOOD=0; fi
  while [ $((SECONDS - T0)) -le "$now" ]; do sleep 0.1; done
done
ELAPSED=$((SECONDS - T0))
if [ -n "$IPERF_PID" ]; then  # the last run ends by itself unless a VTEP died
  for ((i = 0; i < 200; i++)); do [ -z "$DIED" ] && alive "$IPERF_PID" || break; sleep 0.1; done
  iperf_done
fi
stop_pid "$BAD_PID" 5 || true
for side in a b; do
  timeout 5 "$BIN" stats --control "$TMP/$side.sock" --json >"$OUT/stats-$side.json" 2>&1 || true
done
FAIL=()
for side in a b; do
  rc=0; stop_pid "${VX[$side]}" 5 || rc=$?
  [[ $DIED == *$side* ]] && FAIL+=("vxtap $side exited during the soak (status $rc)") ||
    { [ "$rc" = 0 ] || FAIL+=("vxtap $side exited with status $rc on SIGTERM"); }
done

# ---- verdict and summary -----------------------------------------------------------------------
[ "$BYTES" -gt 0 ] || FAIL+=("iperf3 moved no data")
[ "$FDB_FAIL" = 0 ] || FAIL+=("$FDB_FAIL of $FDB_OPS vxtap fdb commands failed (see churn.log)")
{
  printf 'duration      %ss (asked %ss); iperf3: %s runs, %s failed, %s bytes (%s Mbit/s avg, not judged)\n' \
    "$ELAPSED" "$DURATION" "$RUNS" "$IPERF_FAIL" "$BYTES" "$((BYTES * 8 / (ELAPSED > 0 ? ELAPSED : 1) / 1000000))"
  printf 'fdb churn     %s commands on VTEP a, %s failed; bad datagrams sent: %s\n' "$FDB_OPS" "$FDB_FAIL" \
    "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"])' "$OUT/bad-datagrams.json" 2>/dev/null || echo '?')"
  awk -F, -v w="$WARMUP" '
    # Columns per VTEP s (0: a, 1: b): RSS, fds, threads, pool sockets, pool bound.
    NR == 1 { next }
    { n++; for (c = 2; c <= 11; c++) { v[n, c] = $c; if (n == 1 || $c > mx[c]) mx[c] = $c }
      if ($1 >= w) post[++m] = n }
    END {
      printf "%-6s %10s %10s %10s %6s %6s %6s %14s  %s\n", "VTEP", "RSS first", "RSS last", "RSS max", "fd 1st", "fd last", "fd max", "pool max/bound", "growth (last third vs first third, t>=" w "s)"
      for (s = 0; s < 2; s++) {
        r = 2 + 5 * s; f = r + 1; p = r + 3; b = r + 4; k = int(m / 3)
        verdict = "not judged: " m + 0 " samples at t>=" w "s, 3 needed"
        if (k >= 1) {
          a1 = b1 = a2 = b2 = -1
          for (i = 1; i <= m; i++) { j = post[i]; other = v[j, f] - v[j, p]
            if (i <= k) { if (v[j, r] > a1) a1 = v[j, r]; if (other > b1) b1 = other }
            if (i > m - k) { if (v[j, r] > a2) a2 = v[j, r]; if (other > b2) b2 = other } }
          verdict = sprintf("RSS %+d kB, fds besides the pool %+d", a2 - a1, b2 - b1)
          if (a2 - a1 > 2048 || b2 > b1) { verdict = verdict " GREW"; grew = 1 } else verdict = verdict " ok" }
        if (mx[p] > mx[b]) { verdict = verdict "; pool past its bound GREW"; grew = 1 }
        printf "%-6s %7d kB %7d kB %7d kB %6d %6d %6d %14s  %s\n", (s ? "b" : "a"), v[1, r], v[n, r], mx[r], v[1, f], v[n, f], mx[f], mx[p] "/" mx[b], verdict }
      exit grew }' "$OUT/samples.csv" || echo "GREW"
  echo "VTEP a non-zero drop counters:"
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); nz=[f"  {k} {v}" for k,v in d.items() if k.startswith("drop_") and v]; print("\n".join(nz) or "  (none)")' \
    "$OUT/stats-a.json" 2>/dev/null || echo "  (vxtap stats failed: $(head -c 200 "$OUT/stats-a.json"))"
  for side in a b; do
    n=$(grep -Ec 'WARN|ERROR|panic' "$OUT/vxtap-$side.log" || true)
    o=$(grep -E 'WARN|ERROR|panic' "$OUT/vxtap-$side.log" | grep -Evc 'dropped in the last' || true)
    echo "vxtap-$side.log: $n warn/error lines, $o of them not periodic drop reports"
  done
} | tee "$OUT/summary.txt"
grep -qE '^GREW$| GREW' "$OUT/summary.txt" && FAIL+=("RSS or descriptors grew (see the table)")
if [ ${#FAIL[@]} -gt 0 ]; then printf 'FAIL: %s\n' "${FAIL[@]}" | tee -a "$OUT/summary.txt"; exit 1; fi
echo "PASS" | tee -a "$OUT/summary.txt"
