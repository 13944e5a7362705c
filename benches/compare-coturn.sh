#!/usr/bin/env bash
# Runs the same TURN/STUN load against `icebreaker serve` and coturn's `turnserver`, one after
# the other on this machine, and prints a table with both servers' figures and the ratios.
#
#   benches/compare-coturn.sh
#
# Rows over UDP: ChannelData 100 B and 1200 B, Send/Data indications 100 B and STUN Binding,
# each saturated (--window outstanding round trips per allocation), then ChannelData 100 B at a
# fixed rate for the RTT percentiles. Rows over TCP, TLS and DTLS (one connection or DTLS
# session per allocation, the relayed side UDP): ChannelData 100 B and 1200 B over TCP, 100 B
# over TLS, 100 B over DTLS, saturated. The load generator is target/release/turn-load
# (benches/src/bin/turn-load/); see benches/README.md.
#
# Each server is started twice: for the UDP rows with UDP only (as before TCP and TLS rows
# existed), then for the TCP, TLS and DTLS rows with its TCP listener on the same port, and TLS
# and DTLS on their own port (TCP and UDP), with a self-signed ECDSA P-256 certificate made in
# $OUT with openssl. In that phase both servers serve DTLS, whichever rows run: icebreaker
# with --dtls-listen, coturn without --no-dtls (it speaks DTLS 1.2; icebreaker and the
# generator 1.2 and 1.3, so icebreaker's DTLS row runs over 1.3).
#
# Environment (defaults in brackets): DURATION seconds per row [10], WARMUP [1],
# ALLOCATIONS [32], WINDOW [8], RATE [20000], THREADS server threads [2],
# STREAM_THREADS generator threads for TCP/TLS/DTLS [1], TRANSPORTS rows to run
# ["udp tcp tls dtls"] (TRANSPORTS=dtls: the DTLS row alone), PORT_ICEBREAKER [61478],
# PORT_COTURN [61488], TLS_PORT_ICEBREAKER [61483] and TLS_PORT_COTURN [61493] (TLS and DTLS),
# RELAY_PORTS relay range [61500-61999] (above the kernel's ephemeral range),
# TURNSERVER [/usr/bin/turnserver], SERVERS ["icebreaker coturn"],
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
STREAM_THREADS=${STREAM_THREADS:-1}
TRANSPORTS=${TRANSPORTS:-udp tcp tls dtls}
PORT_ICEBREAKER=${PORT_ICEBREAKER:-61478}
PORT_COTURN=${PORT_COTURN:-61488}
# Not port + 1, which is coturn's default RFC 5780 alternate port.
TLS_PORT_ICEBREAKER=${TLS_PORT_ICEBREAKER:-61483}
TLS_PORT_COTURN=${TLS_PORT_COTURN:-61493}
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
CERT="$OUT/bench-cert.pem"
KEY="$OUT/bench-key.pem"

# Starts server $1 on port $2 and waits until it answers a Binding request. Phase $4: "udp"
# (UDP only) or "stream" (also TCP on port $2, TLS and DTLS on port $3, answering there too:
# over DTLS only if a DTLS row runs).
start_server() {
    local name=$1 port=$2 tls_port=$3 phase=$4
    if "$LOAD" --server "127.0.0.1:$port" --probe --duration 0.5 2>/dev/null; then
        echo "something already answers on 127.0.0.1:$port; set PORT_${name^^}" >&2
        return 1
    fi
    SERVER_LOG="$OUT/$name-$phase.log"
    case $name in
        icebreaker)
            # TCP is always on, on the --listen port; TLS and DTLS only where asked (DTLS would
            # follow TLS with an ECDSA certificate anyway: explicit, so that it cannot go away).
            local tls=()
            if [[ $phase == stream ]]; then
                tls=(--tls-listen "127.0.0.1:$tls_port" --dtls-listen "127.0.0.1:$tls_port"
                    --tls-cert "$CERT" --tls-key "$KEY")
            fi
            # --user-quota: every row makes $ALLOCATIONS allocations for the one user.
            "$ICEBREAKER" serve --listen "127.0.0.1:$port" --user bench:bench --realm bench \
                --allow-peer 127.0.0.0/8 --threads "$THREADS" --relay-ports "$RELAY_PORTS" \
                --user-quota 100000 --total-quota 100000 --drain-timeout 1 "${tls[@]}" \
                >"$SERVER_LOG" 2>&1 &
            ;;
        coturn)
            # UDP only for the UDP rows. For the stream rows, TCP on the listening port
            # (coturn's default once --no-tcp is gone), TLS and DTLS on their own port (coturn's
            # default once --no-tls and --no-dtls are gone), as icebreaker has them.
            local listeners=(--no-tls --no-tcp --no-dtls)
            if [[ $phase == stream ]]; then
                listeners=(--tls-listening-port="$tls_port" --cert="$CERT" --pkey="$KEY")
            fi
            # The same service as icebreaker's defaults: long-term credentials, no RFC 5780 (no
            # second address), no SOFTWARE, only XOR-MAPPED-ADDRESS in Binding answers, no
            # bandwidth or allocation limits (coturn's defaults, made explicit), as many relay
            # threads as icebreaker has workers, its own files under $OUT.
            "$TURNSERVER" -n --listening-ip=127.0.0.1 --listening-port="$port" \
                --relay-ip=127.0.0.1 --min-port="$RELAY_MIN" --max-port="$RELAY_MAX" \
                --user=bench:bench --realm=bench --lt-cred-mech --allow-loopback-peers \
                "${listeners[@]}" --no-tcp-relay --no-cli \
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
    local up=true
    "$LOAD" --server "127.0.0.1:$port" --probe --duration 15 || up=false
    if [[ $up == true && $phase == stream ]]; then
        "$LOAD" --server "127.0.0.1:$port" --transport tcp --probe --duration 15 || up=false
        "$LOAD" --server "127.0.0.1:$tls_port" --transport tls --ca "$CERT" --probe \
            --duration 15 || up=false
        if [[ " $TRANSPORTS " == *" dtls "* ]]; then
            "$LOAD" --server "127.0.0.1:$tls_port" --transport dtls --ca "$CERT" --probe \
                --duration 15 || up=false
        fi
    fi
    if [[ $up != true ]] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "$name did not start ($phase); its log:" >&2
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

# name|transport|turn-load arguments
ROWS=(
    "channel 100 B|udp|--mode channel --size 100 --window $WINDOW"
    "channel 1200 B|udp|--mode channel --size 1200 --window $WINDOW"
    "send 100 B|udp|--mode send --size 100 --window $WINDOW"
    "STUN Binding|udp|--mode binding --window $WINDOW"
    "channel 100 B at $RATE rt/s|udp|--mode channel --size 100 --rate $RATE"
    "channel 100 B over TCP|tcp|--mode channel --size 100 --window $WINDOW"
    "channel 1200 B over TCP|tcp|--mode channel --size 1200 --window $WINDOW"
    "channel 100 B over TLS|tls|--mode channel --size 100 --window $WINDOW"
    "channel 100 B over DTLS|dtls|--mode channel --size 100 --window $WINDOW"
)

# The rows of phase $1 ("udp" or "stream") that TRANSPORTS selects, into PHASE_ROWS.
phase_rows() {
    local row transport
    PHASE_ROWS=()
    for row in "${ROWS[@]}"; do
        transport=${row#*|}
        transport=${transport%%|*}
        [[ " $TRANSPORTS " == *" $transport "* ]] || continue
        if [[ $1 == udp && $transport == udp ]] || [[ $1 == stream && $transport != udp ]]; then
            PHASE_ROWS+=("$row")
        fi
    done
}

phase_rows stream
if ((${#PHASE_ROWS[@]} > 0)); then
    # A self-signed certificate for 127.0.0.1, not a CA (rustls refuses a CA certificate as a
    # server's own), valid for the duration of the run and then some. ECDSA: DTLS needs it
    # (icebreaker's DTLS, on dimpl, takes no other).
    timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$KEY" -out "$CERT" -days 2 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
        -addext "extendedKeyUsage=serverAuth" 2>"$OUT/openssl.log"
fi

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for server in $SERVERS; do
    case $server in
        icebreaker) port=$PORT_ICEBREAKER tls_port=$TLS_PORT_ICEBREAKER ;;
        coturn)
            port=$PORT_COTURN tls_port=$TLS_PORT_COTURN
            if [[ ! -x $TURNSERVER ]]; then
                echo "== coturn: $TURNSERVER not found, skipped" >&2
                continue
            fi
            ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    for phase in udp stream; do
        phase_rows "$phase"
        ((${#PHASE_ROWS[@]} > 0)) || continue
        if [[ $phase == udp ]]; then
            echo "== $server on 127.0.0.1:$port (UDP)" >&2
        else
            echo "== $server on 127.0.0.1:$port (UDP, TCP)," \
                "TLS and DTLS on 127.0.0.1:$tls_port" >&2
        fi
        start_server "$server" "$port" "$tls_port" "$phase"
        for row in "${PHASE_ROWS[@]}"; do
            name=${row%%|*}
            rest=${row#*|}
            transport=${rest%%|*}
            # shellcheck disable=SC2206 # the arguments are words on purpose
            args=(${rest#*|})
            case $transport in
                udp) target=(--server "127.0.0.1:$port") ;;
                tcp) target=(--server "127.0.0.1:$port" --transport tcp
                    --stream-threads "$STREAM_THREADS") ;;
                tls) target=(--server "127.0.0.1:$tls_port" --transport tls --ca "$CERT"
                    --stream-threads "$STREAM_THREADS") ;;
                dtls) target=(--server "127.0.0.1:$tls_port" --transport dtls --ca "$CERT"
                    --stream-threads "$STREAM_THREADS") ;;
            esac
            sleep 1
            if ! timeout $((DURATION + 60)) "$LOAD" "${target[@]}" --pid "$SERVER_PID" \
                --user bench --password bench --allocations "$ALLOCATIONS" \
                --duration "$DURATION" --warmup "$WARMUP" --name "$server" --row "$name" \
                "${args[@]}" --json >>"$RESULTS"; then
                echo "   $server: row \"$name\" failed" >&2
            fi
        done
        stop_server
    done
done

echo
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r)"
echo "coturn: $("$TURNSERVER" --version 2>/dev/null | tail -n 1 || echo none); icebreaker: $("$ICEBREAKER" --version)"
echo "Settings: $ALLOCATIONS allocations, window $WINDOW, $DURATION s per row after $WARMUP s warm-up, $THREADS server threads, $STREAM_THREADS generator threads over TCP/TLS/DTLS"
echo "Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Results: $RESULTS"
echo
"$LOAD" --report "$RESULTS"
