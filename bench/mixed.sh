#!/usr/bin/env bash
# A 3-member cluster of two release builds, for rolling-upgrade checks:
#   bench/mixed.sh LEADER_BIN_DIR FOLLOWER_BIN_DIR
# Member 1 (which founds the cluster and leads) runs LEADER_BIN_DIR/clawd,
# members 2 and 3 run FOLLOWER_BIN_DIR/clawd; they join as voters, 16
# clients append for 3 s through member 1, then every member verifies its
# own hash chain (`events verify --stale`): the three lines must show the
# same event count and head. Prints the members' lines about the other
# version (format and stream fallbacks).
set -u
L=$1 F=$2 CTL=$1/clawctl
W=$(mktemp -d /tmp/mixed.XXXX)
pids=()
for i in 1 2 3; do
  bin=$F; [ "$i" = 1 ] && bin=$L
  join=""; [ "$i" -gt 1 ] && join="--join"
  CLAW_LOG_LEVEL=info "$bin/clawd" --id "$i" --listen "127.0.0.1:$((17500 + i))" --data-dir "$W/c$i" $join >"$W/c$i.log" 2>&1 &
  pids+=($!)
done
sleep 3
for i in 2 3; do
  "$CTL" --server 127.0.0.1:17501 member add --id "$i" --addr "127.0.0.1:$((17500 + i))" --voter >/dev/null || echo "member add $i failed"
done
"$CTL" --server 127.0.0.1:17501 bench append --clients 16 --duration 3s | grep -E "events/s|errors|committed"
sleep 1
for i in 1 2 3; do echo "member $i: $("$CTL" --server "127.0.0.1:$((17500 + i))" events verify --stale 2>&1 | tail -1)"; done
grep -h "AppendEntries stream\|JSON" "$W"/c*.log | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c | head
kill -9 "${pids[@]}"
wait 2>/dev/null
rm -rf "$W"
