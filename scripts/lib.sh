# Shared by scripts/bench-netns.sh and scripts/soak.sh (sourced, not run): bookkeeping of the
# processes and network namespaces a script starts, so that all of them are removed on exit,
# error or interrupt, and only they (by PID and by namespace name, never by process name).
# The sourcing script defines log() and sets TMP (a directory removed on exit), then calls
# install_cleanup.

PIDS=()        # every background process started and not yet reaped
CREATED_NS=()  # every namespace created

# start_bg CMD...: run CMD in the background (the caller's redirections apply); PID in LAST_PID.
start_bg() { "$@" & LAST_PID=$!; PIDS+=("$LAST_PID"); }

forget_pid() {
  local p=$1 x keep=()
  for x in "${PIDS[@]}"; do [ "$x" = "$p" ] || keep+=("$x"); done
  PIDS=("${keep[@]}")
}

# alive PID: running and not a zombie.
alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# stop_pid PID [SECS]: SIGTERM, SIGKILL after SECS (default 5), reap; returns the exit status.
stop_pid() {
  local p=$1 secs=${2:-5} i rc=0
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < secs * 20; i++)); do alive "$p" || break; sleep 0.05; done
  if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
  wait "$p" 2>/dev/null || rc=$?
  forget_pid "$p"
  return "$rc"
}

# netns_add NAME: create a namespace (recorded for cleanup) with lo up.
netns_add() {
  ip netns add "$1" || return 1
  CREATED_NS+=("$1")
  ip -n "$1" link set lo up
}

cleanup() {
  local rc=$? p ns i any
  trap - EXIT INT TERM
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for ((i = 0; i < 100; i++)); do
    any=0
    for p in "${PIDS[@]}"; do alive "$p" && any=1; done
    [ "$any" = 0 ] && break
    sleep 0.05
  done
  for p in "${PIDS[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for ns in "${CREATED_NS[@]}"; do
    # Anything still inside a namespace this script created was started by it.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
  done
  [ -n "${TMP:-}" ] && rm -rf "$TMP"
  exit "$rc"
}

install_cleanup() {
  trap cleanup EXIT
  trap 'log "interrupted"; exit 130' INT
  trap 'log "terminated"; exit 143' TERM
}

# ensure_tools: iperf3 (installed if missing) and /dev/net/tun.
ensure_tools() {
  if ! command -v iperf3 >/dev/null; then
    log "installing iperf3"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null || return 1
  fi
  [ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun; }
}
