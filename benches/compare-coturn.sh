#!/usr/bin/env bash
# Runs the same TURN/STUN load against `icebreaker serve` and coturn's `turnserver`, one after
# the other on this machine, and prints a table with both servers' figures and the ratios.
#
#   benches/compare-coturn.sh
#
# Rows: ChannelData 100 B and 1200 B, Send/Data indications 100 B and STUN Binding, each
# saturated (--window outstanding round trips per allocation), then ChannelData 100 B at a fixed
# rate for the RTT percentiles. The load generator is target/release/turn-load
# (benches/src/bin/turn-load/); see benches/README.md.
#
# Environment (defaults in brackets): DURATION seconds per row [10], WARMUP [1],
# ALLOCATIONS [32], WINDOW [8], RATE [20000], THREADS server threads [2],
# PORT_ICEBREAKER [61478], PORT_COTURN [61488], RELAY_PORTS relay range [61500-61999] (above
# the kernel's ephemeral range), TURNSERVER [/usr/bin/turnserver], SERVERS ["icebreaker coturn"],
# OUT directory for logs and results [a new /tmp/icebreaker-compare.XXXXXX].
#
# Everything is bounded in time; the servers it starts are stopped by their PIDs on exit.

set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
ALLOCATIONS=${ALLOCATIONS:-32}
WINDOW=${WINDOW:-8}
RATE=${RATE:-20000}
THREADS=${THREADS:-2}
PORT_ICEBREAKER=${PORT_ICEBREAKER:-61478}
PORT_COTURN=${PORT_COTURN:-61488}
RELAY_PORTS=${RELAY_PORTS:-61500-61999}
TURNSERVER=${TURNSERVER:-/usr/bin/turnserver}
SERVERS=${SERVERS:-icebreaker coturn}
OUT=${OUT:-$(mktemp -d /tmp/icebreaker-compare.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-target}
RELAY_MIN=${RELAY_PORTS%-*}
RELAY_MAX=${RELAY_PORTS#*-}
mkdir -p "$OUT"

# Only the processes this script started, by PID.
STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
timeout 1800 cargo build --release -p icebreaker -p icebreaker-benches >&2
ICEBREAKER="$TARGET/release/icebreaker"
LOAD="$TARGET/release/turn-load"

SERVER_PID=
SERVER_LOG=

# Starts server $1 on port $2 and waits until it answers a Binding request.
start_server() {
    local name=$1 port=$2
    if "$LOAD" --server "127.0.0.1:$port" --probe --duration 0.5 2>/dev/null; then
        echo "something already answers on 127.0.0.1:$port; set PORT_${name^^}" >&2
        return 1
    fi
    SERVER_LOG="$OUT/$name.log"
    case $name in
        icebreaker)
            # --user-quota: every row makes $ALLOCATIONS allocations for the one user.
            "$ICEBREAKER" serve --listen "127.0.0.1:$port" --user bench:bench --realm bench \
                --allow-peer 127.0.0.0/8 --threads "$THREADS" --relay-ports "$RELAY_PORTS" \
                --user-quota 100000 --total-quota 100000 --drain-timeout 1 \
                >"$SERVER_LOG" 2>&1 &
            ;;
        coturn)
            # The same service as icebreaker's defaults: UDP only, long-term credentials, no
            # RFC 5780 (no second address), no SOFTWARE, only XOR-MAPPED-ADDRESS in Binding
            # answers, no bandwidth or allocation limits (coturn's defaults, made explicit), as
            # many relay threads as icebreaker has workers, its own files under $OUT.
            "$TURNSERVER" -n --listening-ip=127.0.0.1 --listening-port="$port" \
                --relay-ip=127.0.0.1 --min-port="$RELAY_MIN" --max-port="$RELAY_MAX" \
                --user=bench:bench --realm=bench --lt-cred-mech --allow-loopback-peers \
                --no-tls --no-dtls --no-tcp --no-tcp-relay --no-cli \
                --relay-threads="$THREADS" --max-bps=0 --bps-capacity=0 \
                --user-quota=0 --total-quota=0 \
                --no-rfc5780 --no-software-attribute --no-stun-backward-compatibility \
                --response-origin-only-with-rfc5780 \
                --log-file="$OUT/coturn-internal.log" --simple-log --no-stdout-log \
                --pidfile="$OUT/coturn.pid" --userdb="$OUT/turndb" \
                >"$SERVER_LOG" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    if ! "$LOAD" --server "127.0.0.1:$port" --probe --duration 15 || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "$name did not start; its log:" >&2
        tail -n 20 "$SERVER_LOG" >&2 || true
        return 1
    fi
    # $! must be the server itself (by now it has exec'd), whose CPU time turn-load reads in
    # /proc/PID/stat.
    local comm
    comm=$(cat "/proc/$SERVER_PID/comm" 2>/dev/null || true)
    if [[ $comm != icebreaker && $comm != turnserver ]]; then
        echo "PID $SERVER_PID is \"$comm\", not the server" >&2
        return 1
    fi
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    local kept=() pid
    for pid in "${STARTED[@]}"; do
        [[ $pid == "$SERVER_PID" ]] || kept+=("$pid")
    done
    STARTED=("${kept[@]}")
}

# name|turn-load arguments
ROWS=(
    "channel 100 B|--mode channel --size 100 --window $WINDOW"
    "channel 1200 B|--mode channel --size 1200 --window $WINDOW"
    "send 100 B|--mode send --size 100 --window $WINDOW"
    "STUN Binding|--mode binding --window $WINDOW"
    "channel 100 B at $RATE rt/s|--mode channel --size 100 --rate $RATE"
)

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for server in $SERVERS; do
    case $server in
        icebreaker) port=$PORT_ICEBREAKER ;;
        coturn)
            port=$PORT_COTURN
            if [[ ! -x $TURNSERVER ]]; then
                echo "== coturn: $TURNSERVER not found, skipped" >&2
                continue
            fi
            ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    echo "== $server on 127.0.0.1:$port" >&2
    start_server "$server" "$port"
    for row in "${ROWS[@]}"; do
        name=${row%%|*}
        # shellcheck disable=SC2206 # the arguments are words on purpose
        args=(${row#*|})
        sleep 1
        if ! timeout $((DURATION + 60)) "$LOAD" --server "127.0.0.1:$port" --pid "$SERVER_PID" \
            --user bench --password bench --allocations "$ALLOCATIONS" \
            --duration "$DURATION" --warmup "$WARMUP" --name "$server" --row "$name" \
            "${args[@]}" --json >>"$RESULTS"; then
            echo "   $server: row \"$name\" failed" >&2
        fi
    done
    stop_server
done

echo
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r)"
echo "coturn: $("$TURNSERVER" --version 2>/dev/null | tail -n 1 || echo none); icebreaker: $("$ICEBREAKER" --version)"
echo "Settings: $ALLOCATIONS allocations, window $WINDOW, $DURATION s per row after $WARMUP s warm-up, $THREADS server threads"
echo "Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Results: $RESULTS"
echo
"$LOAD" --report "$RESULTS"
