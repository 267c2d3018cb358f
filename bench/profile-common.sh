# shellcheck shell=bash
# Shared by bench/profile-setup and bench/profile-memory (sourced, not run): the same
# line as bench/call-load — one agent in a queue behind our number, a carrier trunk by
# address, the agent's phone as a registered SIPp UAS — and a SIPp carrier placing calls
# from a new caller number each (so every call does the CRM lookup and creates a lead).
#
# The sourcing script sets: root, work, binary, gateway_prefix (an array the gateway's
# command line is prefixed with, e.g. heaptrack; empty for none) and gateway_log_level
# (LEADLINE_LOG; empty: the gateway's default).
# It must call `profile_cleanup` from its EXIT trap.

gateway_pid=""
agent_pid=""
sipp_pids=()
clk_tck="$(getconf CLK_TCK)"

profile_cleanup() {
    local pid
    for pid in "${sipp_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    if [ -n "$gateway_pid" ]; then stop_gateway; fi
}

# A port on 127.0.0.1 free for TCP and UDP a moment ago (the gateway binds both).
free_port() {
    python3 - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close(); t.close()
    print(port); break
EOF
}

export LEADLINE_ADMIN_TOKEN="${LEADLINE_ADMIN_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
http_port="$(free_port)"
sip_port="$(free_port)"
api="http://127.0.0.1:$http_port/api/v1"

# The gateway's own pid: with a prefix (heaptrack) the launched process is a wrapper.
gateway_process() {
    local pid
    if [ "${#gateway_prefix[@]}" -eq 0 ]; then
        echo "$gateway_launcher"
        return
    fi
    for pid in $(pgrep -f -- "$work/data" 2>/dev/null || true); do
        if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$binary" ]; then
            echo "$pid"
            return
        fi
    done
}

# Starts the gateway on the temp data dir; waits until /readyz answers. Sets gateway_pid
# (the gateway itself) and gateway_launcher (what was started).
start_gateway() {
    local level=("LEADLINE_LOG=${gateway_log_level:-}")
    [ -n "${gateway_log_level:-}" ] || level=()
    env "${level[@]}" "${gateway_prefix[@]}" "$binary" serve \
        --data-dir "$work/data" \
        --http "127.0.0.1:$http_port" \
        --sip "127.0.0.1:$sip_port" \
        --sip-digest md5,sha256 \
        >>"$work/gateway.log" 2>&1 &
    gateway_launcher=$!
    local deadline=$((SECONDS + 60))
    until curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; do
        if ! kill -0 "$gateway_launcher" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "profile: the gateway did not become ready:" >&2
            tail -20 "$work/gateway.log" >&2
            exit 2
        fi
        sleep 0.1
    done
    gateway_pid="$(gateway_process)"
    [ -n "$gateway_pid" ] || { echo "profile: cannot find the gateway's pid" >&2; exit 2; }
}

# stop_gateway [SIGNAL]: TERM by default (a clean shutdown); KILL leaves the heap as it
# was for heaptrack's "leaked" figure.
stop_gateway() {
    local signal="${1:-TERM}"
    kill "-$signal" "$gateway_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$gateway_launcher" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$gateway_pid" 2>/dev/null || true
    wait "$gateway_launcher" 2>/dev/null || true
    gateway_pid=""
}

status_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$gateway_pid/status"; }
# CPU ticks (utime + stime) of the gateway.
gateway_ticks() { sed 's/.*) //' "/proc/$gateway_pid/stat" | awk '{print $12 + $13}'; }
metric_sum() { # metric_sum REGEX: sum of the samples whose line matches
    curl -fs "http://127.0.0.1:$http_port/metrics" | awk -v re="$1" '$0 ~ re && !/^#/ {s += $NF} END {printf "%.0f", s + 0}'
}

# Waits (at most 90 s) until the gateway uses less than 5 % of a core.
wait_idle() {
    local waited=0 before after
    while [ "$waited" -lt 90 ]; do
        before="$(gateway_ticks)"
        sleep 1
        after="$(gateway_ticks)"
        waited=$((waited + 1))
        [ $(((after - before) * 20)) -lt "$clk_tck" ] && return
    done
}

# One agent in a queue behind our number, a carrier trunk by address (as bench/call-load).
number="+4930901820"
extension="101"
sip_password="$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
setup_line() {
    python3 - "$api" "$number" "$extension" "$sip_password" <<'EOF'
import json, os, sys, urllib.request
api, number, ext, pw = sys.argv[1:5]
def post(path, body):
    req = urllib.request.Request(api + path, json.dumps(body).encode(), method="POST", headers={
        "Authorization": "Bearer " + os.environ["LEADLINE_ADMIN_TOKEN"],
        "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=30))
# One phone takes every call of the load: as a shared line, not a person who takes one
# call at a time (max_calls), or the queue would hold callers waiting for it.
agent = post("/users", {"name": "Anna Load", "email": "anna.load@example.com", "role": "agent",
                        "extension": ext, "sip_password": pw, "max_calls": 100000})["id"]
queue = post("/queues", {"name": "Sales", "members": [agent]})["id"]
trunk = post("/trunks", {"name": "Carrier", "kind": "carrier", "host": "127.0.0.1",
                         "register": False, "allowed_ips": ["127.0.0.0/8"]})["id"]
post("/numbers", {"number": number, "default_country": "DE", "queue": queue, "trunk": trunk,
                  "ring_timeout_s": 30})
EOF
}

# The agent's phone: REGISTER (digest, Expires 3600) from its port, then a UAS on the same
# port for the whole run (bench/call-load-agent.xml).
start_agent() {
    sed 's/^\( *Expires:\) 300$/\1 3600/' "$root/tests/data/sipp/register.xml" >"$work/register.xml"
    agent_port="$(free_port)"
    sipp "127.0.0.1:$sip_port" -sf "$work/register.xml" -m 1 -t u1 -i 127.0.0.1 -p "$agent_port" \
        -mp "$(free_port)" -s "$extension" -au "$extension" -ap "$sip_password" \
        -nostdin -timeout 20s -timeout_error >"$work/agent-register.out" 2>&1 ||
        { echo "profile: the agent's phone did not register:" >&2; tail -20 "$work/agent-register.out" >&2; exit 2; }
    sipp -sf "$root/bench/call-load-agent.xml" -t u1 -i 127.0.0.1 -p "$agent_port" -mp "$(free_port)" \
        -buff_size 4194304 -default_behaviors all,-abortunexp -nostdin -timeout 3600s \
        >"$work/agent.out" 2>&1 &
    agent_pid=$!
    sleep 0.5
    kill -0 "$agent_pid" 2>/dev/null || { echo "profile: the agent's SIPp did not start:" >&2; cat "$work/agent.out" >&2; exit 2; }
}

# Caller numbers: +49176 and eight digits, never used twice in a run.
next_caller=10000000
callers_csv() { # callers_csv FILE COUNT
    awk -v first="$next_caller" -v n="$2" 'BEGIN {print "SEQUENTIAL"; for (i = 0; i < n; i++) printf "+49176%08d\n", first + i}' >"$1"
    next_caller=$((next_caller + $2))
}

# carrier_start NAME RATE CALLS HOLD_MS [SOURCE_IP]: a SIPp carrier in the background
# (pid appended to sipp_pids), stats in $work/NAME.csv.
carrier_start() {
    local name=$1 rate=$2 calls=$3 hold_ms=$4 source_ip=${5:-127.0.0.1}
    callers_csv "$work/$name-callers.csv" "$calls"
    sipp "127.0.0.1:$sip_port" -sf "$root/bench/call-load-carrier.xml" -s "$number" \
        -inf "$work/$name-callers.csv" -r "$rate" -m "$calls" -l "$((rate * 20 + calls / 10 + 100))" \
        -d "$hold_ms" -i "$source_ip" -p "$(free_port)" -mp "$(free_port)" -t u1 -buff_size 4194304 \
        -default_behaviors all,-abortunexp \
        -nostdin -timeout "$((calls / rate + hold_ms / 1000 + 120))s" -recv_timeout 30s \
        -trace_stat -stf "$work/$name.csv" -fd 1 \
        >"$work/$name.out" 2>&1 &
    sipp_pids+=($!)
}

# carrier_result NAME: "ok failed retransmissions" from SIPp's last statistics line.
carrier_result() {
    awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next } { last = $0 }
        END { split(last, x, ";"); print x[col["SuccessfulCall(C)"]] + 0, x[col["FailedCall(C)"]] + 0,
              x[col["Retransmissions(C)"]] + 0 }' "$work/$1.csv" 2>/dev/null || echo "0 0 0"
}

carriers_wait() {
    local pid
    for pid in "${sipp_pids[@]}"; do wait "$pid" || true; done
    sipp_pids=()
}
