#!/usr/bin/env bash
# fleetsim, Locust + paho-mqtt and Locust FastHttpUser doing the same PIN
# checks against one external reference server, side by side in one
# session, ROUNDS rounds; prints one line per run: checks, harness CPU
# (user + sys of the harness process, from /usr/bin/time), checks per
# harness core-second, the server's CPU over the run, and the 1-minute load
# average at the start. See README.md in this directory for the setup.
#
#   FLEETSIM=target/release/fleetsim LOCUST=locust SERVER_PID=... \
#   MANIFEST=fleet-2k.json DEVICES=devices-2k.json \
#   TARGET=http://127.0.0.1:8080 BROKER=127.0.0.1:1883 sim/benches/locust/session.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scenario=$here/../mqtt-1000-door-phones-2k.toml
: "${FLEETSIM:?}" "${LOCUST:?}" "${SERVER_PID:?}" "${MANIFEST:?}" "${DEVICES:?}" "${TARGET:?}" "${BROKER:?}"
ROUNDS=${ROUNDS:-3}
USERS=${USERS:-1000}
RATE_PER_USER=${RATE_PER_USER:-2}
RUN_S=${RUN_S:-35}
out=${OUT:-$(mktemp -d)}

server_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SERVER_PID/stat"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
cpu_of() { awk '/^cpu/ {print $2 + $4}' "$1"; }  # "cpu USER user SYS sys" from /usr/bin/time
row() {  # name checks failures cpu_file server_before load
  local cpu srv
  cpu=$(cpu_of "$4")
  srv=$(awk -v a="$5" -v b="$(server_cpu_s)" 'BEGIN {printf "%.1f", b - a}')
  awk -v n="$1" -v c="$2" -v f="$3" -v cpu="$cpu" -v srv="$srv" -v l="$6" \
    'BEGIN {printf "%-14s checks %6d failed %5d harness CPU %6.2f s  %6.0f checks per harness core-second  server CPU %s s  load %s\n", n, c, f, cpu, c / cpu, srv, l}'
}

for round in $(seq 1 "$ROUNDS"); do
  # fleetsim
  l=$(load1); s=$(server_cpu_s)
  /usr/bin/time -f "cpu %U user %S sys" -o "$out/fs-$round.time" \
    "$FLEETSIM" run "$scenario" --fleet "$MANIFEST" --report-dir "$out/fs-$round" >"$out/fs-$round.log" 2>&1 || true
  read -r checks failed < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); a=r["checks"]; print(a["count"], a["errors"])' "$out/fs-$round/report.json")
  row "fleetsim" "$checks" "$failed" "$out/fs-$round.time" "$s" "$l"

  # Locust, paho-mqtt and FastHttpUser
  for kind in mqtt http; do
    l=$(load1); s=$(server_cpu_s)
    DEVICES_JSON=$DEVICES BROKER=$BROKER RATE_PER_USER=$RATE_PER_USER \
      /usr/bin/time -f "cpu %U user %S sys" -o "$out/l$kind-$round.time" \
      "$LOCUST" -f "$here/locustfile_$kind.py" --headless -u "$USERS" -r 200 -t "${RUN_S}s" \
      --host "$TARGET" --only-summary --csv "$out/l$kind-$round" >"$out/l$kind-$round.log" 2>&1 || true
    read -r checks failed < <(awk -F, '$2 == "Aggregated" {print $3, $4}' "$out/l$kind-${round}_stats.csv")
    row "locust-$kind" "$checks" "$failed" "$out/l$kind-$round.time" "$s" "$l"
  done
done
echo "logs and reports: $out"
