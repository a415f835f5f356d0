#!/usr/bin/env bash
# What following a busy access log costs: guardian's daemon and mtail (Debian's package) tail
# the same nginx log, written at RATE lines per second for SECS seconds, into the same counters
# (requests, errors, a latency histogram). Prints CPU time per line, share of one core and peak
# resident memory for each, and their ratio. Needs root for apt-get if mtail is missing.
#
#   bash bench/daemon-overhead.sh [RATE] [SECS]      (defaults: 2000 lines/s for 60 s)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
SECS=${2:-60}
command -v mtail >/dev/null || { apt-get update -qq && apt-get install -y -qq mtail >/dev/null; }
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/guardian"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
log="$work/access.log"
: > "$log"
head -c 32 /dev/urandom | base64 > "$work/token"
cat > "$work/guardian.toml" <<TOML
[daemon]
service = "bench"
state_dir = "$work/state"
listen = "127.0.0.1:0"
token_file = "$work/token"
[[daemon.logs]]
name = "nginx"
path = "$log"
format = "nginx"
TOML
mkdir -p "$work/progs"
cat > "$work/progs/nginx.mtail" <<'MTAIL'
counter requests_total
counter errors_total
histogram request_seconds buckets 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5
/^\S+ \S+ \S+ \[[^\]]+\] "[^"]*" (?P<status>\d{3}) \d+ "[^"]*" "[^"]*" (?P<rt>\d+\.\d+)$/ {
  requests_total++
  $status >= 500 {
    errors_total++
  }
  request_seconds = $rt
}
MTAIL

"$BIN" run --config "$work/guardian.toml" 2>"$work/guardian.err" &
gpid=$!
mtail --progs "$work/progs" --logs "$log" --port 0 --logtostderr 2>"$work/mtail.err" &
mpid=$!
sleep 2

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
g0=$(ticks $gpid); m0=$(ticks $mpid)

# The writer: RATE lines a second of nginx combined + $request_time, 1% errors.
python3 - "$log" "$RATE" "$SECS" <<'PY'
import sys, time, random
path, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(1)
start = time.time()
with open(path, "a", buffering=1 << 16) as f:
    for sec in range(secs):
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        lines = []
        for i in range(rate):
            status = 500 if random.random() < 0.01 else 200
            lines.append('203.0.113.%d - - [%s] "GET /cart/%d HTTP/1.1" %d 512 "-" "bench" %.3f\n'
                         % (i % 250, stamp, i, status, random.lognormvariate(-3, 0.5)))
        f.write("".join(lines)); f.flush()
        time.sleep(max(0.0, start + sec + 1 - time.time()))
PY
sleep 2
g1=$(ticks $gpid); m1=$(ticks $mpid)
hz=$(getconf CLK_TCK)
lines=$((RATE * SECS))
report() { # name ticks kib
  awk -v n="$1" -v t="$2" -v hz="$hz" -v secs="$SECS" -v lines="$lines" -v kib="$3" 'BEGIN {
    cpu = t / hz; printf "%-9s CPU %6.2f s = %5.2f%% of one core, %7.2f us per line, peak RSS %6.1f MiB\n",
    n, cpu, 100 * cpu / (secs + 2), 1e6 * cpu / lines, kib / 1024 }'
}
echo "$lines lines at $RATE lines/s for $SECS s"
report guardian $((g1 - g0)) "$(hwm $gpid)"
report mtail $((m1 - m0)) "$(hwm $mpid)"
awk -v g=$((g1 - g0)) -v m=$((m1 - m0)) 'BEGIN { if (m > 0) printf "guardian / mtail CPU per line: %.2f\n", g / m }'
# Both must really have read every line, or the figures mean nothing.
api=$(sed -n 's/.*API listening on //p' "$work/guardian.err" | head -1)
read_g=$("$BIN" status --api "http://$api" --token-file "$work/token" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["sources"][0]["lines_read_total"])')
read_m=$(curl -s "http://127.0.0.1:$(sed -n 's/.*Listening on.*:\([0-9]*\).*/\1/p' "$work/mtail.err" | head -1)/json" 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["requests_total"][0]["LabelValues"][0]["Value"]["Value"]))' 2>/dev/null || echo "?")
echo "lines read: guardian $read_g, mtail $read_m (of $lines)"
[ "$read_g" = "$lines" ] || { echo "guardian did not read every line" >&2; exit 1; }
