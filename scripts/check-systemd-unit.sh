#!/usr/bin/env bash
# Checks dist/vxtap@.service and dist/vxtap-flannel.service with `systemd-analyze verify`,
# failing on any output: systemd only warns about unknown keys and bad values ("Unknown key
# 'ProtectSytem'", "Invalid device rights") and still exits 0. Also fails if the offline exposure score (`systemd-analyze security`) rises
# above 3.0. Needs no running systemd. Usage: scripts/check-systemd-unit.sh [VXTAP_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/vxtap}")
[ -x "$bin" ] || { echo "$0: no vxtap binary at $bin (cargo build --release first)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for unit in dist/vxtap@.service dist/vxtap-flannel.service; do
name=$(basename "$unit")
# verify checks that ExecStart's program exists: the built binary stands in for /usr/bin/vxtap.
sed "s#^ExecStart=/usr/bin/vxtap #ExecStart=$bin #" "$unit" > "$dir/$name"
grep -q "^ExecStart=$bin \(run\|flannel\) " "$dir/$name" || { echo "$unit: ExecStart is not /usr/bin/vxtap run|flannel ..." >&2; exit 1; }
# --man=no: the man page named in Documentation= is not installed here.
if ! out=$(systemd-analyze verify --man=no "$dir/$name" 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify $unit:" >&2
  echo "$out" >&2
  exit 1
fi
if ! out=$(systemd-analyze security --offline=true --man=no --threshold=30 "$dir/$name" 2>&1); then
  echo "$out" | tail -n 30 >&2
  echo "$unit: exposure above 3.0" >&2
  exit 1
fi
echo "$unit: verified; $(echo "$out" | grep -o 'Overall exposure level.*')"
done
