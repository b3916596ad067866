#!/usr/bin/env bash
# Installs nvcf-lite as a systemd service; run as root from a clone of this repository:
#
#   scripts/install.sh [--exe PATH]   # PATH: the one-file executable (default dist/nvcf-lite,
#                                     # made by scripts/build-executable.sh)
#   scripts/install.sh --uninstall    # removes all but the data (see below)
#   scripts/install.sh --print-config # prints the config file it installs, and exits
#
# Installs /usr/local/bin/nvcf-lite, /etc/nvcf-lite/config.toml (the repository's config.toml
# with data_dir = /var/lib/nvcf-lite; an edited copy is never overwritten: the new default goes
# beside it as config.toml.new), /etc/systemd/system/nvcf-lite.service (packaging/), the system
# user and group nvcf-lite (no login shell, home /var/lib/nvcf-lite, in group docker) and the
# state directory /var/lib/nvcf-lite (0700). With systemd running it then enables and starts
# the service (restarts it when the executable, unit or config changed); without (a container,
# a chroot) it enables it for the next boot and says what it would have run.
# Safe to run twice: what is already in place is left alone, and the last line says whether
# anything changed.
#
# --uninstall stops and disables the service, removes the unit, the executable, the config if
# unedited, and the function containers of the config's [docker] namespace. It keeps the data
# (/var/lib/nvcf-lite), an edited config, and the nvcf-lite user, which owns the data.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NAME=nvcf-lite
BIN=/usr/local/bin/nvcf-lite
ETC=/etc/nvcf-lite
CONFIG=$ETC/config.toml
SUM=$ETC/.config.toml.sha256
UNIT=/etc/systemd/system/nvcf-lite.service
STATE=/var/lib/nvcf-lite
changes=0

say() { echo "install.sh: $*"; }
changed() {
  changes=$((changes + 1))
  say "$*"
}
die() {
  echo "install.sh: error: $*" >&2
  exit 1
}
systemd_running() { [ -d /run/systemd/system ]; }

# The installed config: the repository's (every key, with its comment), data_dir pointed at the
# unit's StateDirectory=.
default_config() {
  cat <<EOF
# Installed by scripts/install.sh as $CONFIG for the nvcf-lite service
# (packaging/nvcf-lite.service). Edit freely: a reinstall never overwrites an edited file; it
# writes its new default beside it as config.toml.new. Restart to apply:
# systemctl restart nvcf-lite
#
EOF
  awk -v dir="$STATE" '
    /^\[/ { section = $0 }
    section == "[store]" && /^data_dir = / { print "data_dir = \"" dir "\""; n++; next }
    { print }
    END { if (n != 1) exit 3 }
  ' "$REPO/config.toml" || die "config.toml has no single [store] data_dir line"
}

# Copies $1 to $2 (mode $3, group $4) unless it is there already; the rename is atomic, so a
# running service never sees a half-written executable. Returns 1 when nothing changed.
put() {
  local src=$1 dest=$2 mode=$3 group=$4
  if cmp -s "$src" "$dest" && [ "$(stat -c '%a %U %G' "$dest")" = "$mode root $group" ]; then
    return 1
  fi
  install -m "$mode" -o root -g "$group" "$src" "$dest.install-tmp"
  mv -f "$dest.install-tmp" "$dest"
}

install_user() {
  if ! getent group docker >/dev/null; then
    # Docker's package makes it too; dockerd gives its socket to this group when it exists.
    groupadd --system docker
    changed "created group docker (dockerd gives /run/docker.sock to it when it starts)"
  fi
  if ! getent passwd "$NAME" >/dev/null; then
    useradd --system --user-group --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "nvcf-lite service" "$NAME"
    changed "created system user $NAME"
  fi
  if ! id -nG "$NAME" | tr ' ' '\n' | grep -qx docker; then
    usermod -aG docker "$NAME"
    changed "added $NAME to group docker (it starts function containers)"
  fi
}

install_state_dir() {
  if [ ! -d "$STATE" ]; then
    install -d -m 0700 -o "$NAME" -g "$NAME" "$STATE"
    changed "created $STATE (data_dir, 0700 $NAME)"
  elif [ "$(stat -c '%a %U %G' "$STATE")" != "700 $NAME $NAME" ]; then
    chown "$NAME:$NAME" "$STATE"
    chmod 0700 "$STATE"
    changed "set $STATE to 0700 $NAME:$NAME"
  fi
}

# The config is unedited when it is what install.sh wrote last ($SUM holds its SHA-256), so an
# upgrade replaces an unedited old default and never an edited file.
unedited() {
  [ -f "$CONFIG" ] && { cmp -s "$1" "$CONFIG" ||
    [ "$(sha256sum <"$CONFIG")" = "$(cat "$SUM" 2>/dev/null)" ]; }
}

install_config() {
  local tmp
  tmp=$(mktemp)
  default_config >"$tmp"
  if [ ! -d "$ETC" ] || [ "$(stat -c '%a %U %G' "$ETC")" != "750 root $NAME" ]; then
    install -d -m 0750 -o root -g "$NAME" "$ETC"
    changed "made $ETC (0750 root:$NAME: the config may hold auth.bootstrap_key)"
  fi
  if [ ! -e "$CONFIG" ] || unedited "$tmp"; then
    if put "$tmp" "$CONFIG" 640 "$NAME"; then
      config_changed=1
      changed "installed $CONFIG (data_dir = $STATE)"
    fi
    if [ "$(cat "$SUM" 2>/dev/null)" != "$(sha256sum <"$tmp")" ]; then
      sha256sum <"$tmp" >"$SUM"
    fi
    if [ -e "$CONFIG.new" ]; then
      rm -f "$CONFIG.new"
      changed "removed $CONFIG.new (the config is the default again)"
    fi
  elif put "$tmp" "$CONFIG.new" 640 "$NAME"; then
    changed "kept your edited $CONFIG; the new default is $CONFIG.new (diff them)"
  else
    say "kept your edited $CONFIG ($CONFIG.new is the default)"
  fi
  rm -f "$tmp"
}

install_files() {
  local exe=$1
  [ -f "$exe" ] && [ -x "$exe" ] ||
    die "no executable at $exe: run scripts/build-executable.sh, or give --exe PATH"
  local version
  version=$("$exe" --version) || die "$exe --version failed"
  exe_changed=0 unit_changed=0 config_changed=0
  if put "$exe" "$BIN" 755 root; then
    exe_changed=1
    changed "installed $BIN ($version)"
  fi
  if put "$REPO/packaging/nvcf-lite.service" "$UNIT" 644 root; then
    unit_changed=1
    changed "installed $UNIT"
  fi
}

start_service() {
  if ! command -v systemctl >/dev/null; then
    say "no systemctl on this machine: start it by hand: $BIN --config $CONFIG serve"
    return
  fi
  if ! systemd_running; then
    if ! systemctl is-enabled --quiet "$NAME" 2>/dev/null; then
      systemctl enable "$NAME" 2>&1 | sed 's/^/  /'
      changed "enabled $NAME for the next boot"
    fi
    say "systemd is not running here (PID 1 is $(cat /proc/1/comm)); with it, this would run:"
    say "  systemctl daemon-reload && systemctl enable --now $NAME"
    return
  fi
  [ "$unit_changed" = 1 ] && systemctl daemon-reload
  if ! systemctl is-enabled --quiet "$NAME"; then
    systemctl enable "$NAME" 2>&1 | sed 's/^/  /'
    changed "enabled $NAME"
  fi
  if ! systemctl is-active --quiet "$NAME"; then
    systemctl start "$NAME"
    changed "started $NAME; its first start prints an admin key: journalctl -u $NAME"
  elif [ "$exe_changed$unit_changed$config_changed" != 000 ]; then
    systemctl restart "$NAME"
    changed "restarted $NAME (new executable, unit or config)"
  fi
}

uninstall() {
  if [ -e "$UNIT" ] && command -v systemctl >/dev/null; then
    if systemd_running; then
      if systemctl is-active --quiet "$NAME" || systemctl is-enabled --quiet "$NAME"; then
        systemctl disable --now "$NAME" 2>&1 | sed 's/^/  /'
        changed "stopped and disabled $NAME"
      fi
    elif systemctl is-enabled --quiet "$NAME" 2>/dev/null; then
      systemctl disable "$NAME" 2>&1 | sed 's/^/  /'
      changed "disabled $NAME"
    fi
  fi
  remove_containers
  if [ -e "$UNIT" ]; then
    rm -f "$UNIT"
    systemd_running && systemctl daemon-reload
    changed "removed $UNIT"
  fi
  if [ -e "$BIN" ]; then
    rm -f "$BIN"
    changed "removed $BIN"
  fi
  remove_config
  getent passwd "$NAME" >/dev/null &&
    say "kept user $NAME (it owns $STATE); after deleting the data: userdel $NAME"
  [ -d "$STATE" ] && say "kept $STATE (database, signing key, assets); delete with: rm -r $STATE"
  return 0
}

# Function containers outlive the service (keep_instances_on_shutdown); with the service gone
# nothing would adopt them. The namespace as nvcf-lite resolves it: the environment, then the
# config's [docker] namespace.
remove_containers() {
  local ns=${NVCF_LITE_DOCKER__NAMESPACE:-} ids
  if [ -z "$ns" ] && [ -f "$CONFIG" ]; then
    ns=$(awk -F'"' '/^\[/ { s = $0 } s == "[docker]" && /^namespace = / { print $2 }' "$CONFIG")
  fi
  if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    say "warning: Docker does not answer; remove this server's function containers with:"
    say "  docker rm -f \$(docker ps -aq --filter label=nvcf-lite.namespace=${ns:-default})"
    return 0
  fi
  ids=$(docker ps -aq --filter "label=nvcf-lite.namespace=${ns:-default}")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null
    changed "removed $(echo "$ids" | wc -l) function container(s) (namespace ${ns:-default})"
  fi
}

remove_config() {
  [ -d "$ETC" ] || return 0
  local tmp
  tmp=$(mktemp)
  default_config >"$tmp"
  if unedited "$tmp"; then
    rm -f "$CONFIG"
    changed "removed $CONFIG (unedited)"
  fi
  rm -f "$tmp" "$SUM"
  if [ -e "$CONFIG.new" ]; then
    rm -f "$CONFIG.new"
    changed "removed $CONFIG.new"
  fi
  if rmdir "$ETC" 2>/dev/null; then
    changed "removed $ETC"
  elif [ -e "$CONFIG" ]; then
    say "kept your edited $CONFIG; delete with: rm -r $ETC"
  else
    say "kept $ETC (it holds files of yours)"
  fi
}

main() {
  local exe=$REPO/dist/nvcf-lite mode=install
  while [ $# -gt 0 ]; do
    case $1 in
      --exe)
        [ $# -ge 2 ] || die "--exe needs a path"
        exe=$2
        shift 2
        ;;
      --uninstall) mode=uninstall && shift ;;
      --print-config) mode=print-config && shift ;;
      -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        return 0
        ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
  done
  if [ "$mode" = print-config ]; then
    default_config
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
  if [ "$mode" = uninstall ]; then
    uninstall
  else
    install_user
    install_state_dir
    install_files "$exe"
    install_config
    start_service
  fi
  if [ "$changes" = 0 ]; then
    say "nothing changed: everything was already in place"
  else
    say "done: $changes change(s)"
  fi
}

main "$@"
