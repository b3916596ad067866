# Sourced by the shell checks (build-executable, smoke-executable, test-docker-image): helpers for
# servers they start on loopback. Not a script of its own.

# free_port: prints a loopback port nothing listens on, below the kernel's ephemeral range (where
# outgoing connections and Docker's published ports take theirs); bash's /dev/tcp: refused means
# free. Fails (status 1, a message on stderr) when none is found.
free_port() {
  local lo hi port
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  for _ in $(seq 1 50); do
    if [ "$lo" -gt 11000 ]; then
      port=$((10000 + RANDOM % (lo - 10000)))
    elif [ "$hi" -lt 65000 ]; then
      port=$((hi + 1 + RANDOM % (65535 - hi)))
    else
      port=$((10000 + RANDOM % 22000))
    fi
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "error: no free loopback port found" >&2
  return 1
}

# The scripts' HTTP helpers: each script defines `api METHOD PATH ...` (curl; sets STATUS and
# BODY), `fail MESSAGE` and `say MESSAGE`; these build on them.

# expect STATUS WHAT: fails unless the last api call answered STATUS.
expect() { [ "$STATUS" = "$1" ] || fail "$2: expected HTTP $1, got $STATUS: $BODY"; }

# json_field NAME: the first "NAME":"value" in BODY.
json_field() { grep -o "\"$1\":\"[^\"]*\"" <<<"$BODY" | head -n 1 | cut -d'"' -f4; }

# wait_active FID VID: polls the version until it is ACTIVE; fails on ERROR or after 90 s.
wait_active() {
  local fid=$1 vid=$2 started=$SECONDS status
  while :; do
    api GET "/v2/nvcf/functions/$fid/versions/$vid"
    expect 200 "get version"
    status=$(json_field status)
    [ "$status" = ACTIVE ] && break
    [ "$status" != ERROR ] || fail "the deployment went to ERROR: $BODY"
    [ $((SECONDS - started)) -lt 90 ] || fail "not ACTIVE within 90 s (status $status): $BODY"
    sleep 0.5
  done
  say "deploy: ACTIVE after $((SECONDS - started)) s"
}
