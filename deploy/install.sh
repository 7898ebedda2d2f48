#!/bin/bash
# Install the riverseal gateway on Raspberry Pi OS / Debian 12 (arm64, amd64) as a
# systemd service. Run as root; --help says what it does and its options. Running it
# again changes nothing that is already as it should be (an upgrade reinstalls the
# virtual environment only when the source changed).
set -eu -o pipefail
umask 022

SERVICE=riverseal-gateway.service
SVC_USER=riverseal
SERIAL_GROUP=dialout
OPT=/opt/riverseal
VENV=$OPT/venv
STAMP=$OPT/installed-from
ETC=/etc/riverseal
KEYDIR=$ETC/key
CONFIG=$ETC/gateway.toml
DATA=/var/lib/riverseal
UNIT=/etc/systemd/system/$SERVICE
WANTS=/etc/systemd/system/multi-user.target.wants
RULES=/etc/udev/rules.d/61-riverseal-serial.rules
BIN_LINK=/usr/local/bin/gateway
NOLOGIN=/usr/sbin/nologin

here=$(cd "$(dirname "$0")" && pwd)
me=install.sh

usage() {
    cat <<EOF
Usage: $me [--from DIR|WHEEL|SDIST] [--wheels DIR] [--python PATH] [--prefix DIR]
       $me --uninstall [--purge] [--prefix DIR]

Installs the riverseal gateway as the systemd service $SERVICE:
  - the system user $SVC_USER (no login shell, home $DATA, in group $SERIAL_GROUP);
  - a virtual environment $VENV with riverseal[gateway], and the link $BIN_LINK;
  - $ETC: on a first install \`gateway init\` makes the device key (in $KEYDIR/),
    gateway.toml and trust.txt; an existing key or config is never replaced;
  - $DATA, the data directory (the unit's StateDirectory=);
  - udev rules naming USB serial adapters /dev/riverseal/usb-<vendor>_<model>_<serial>-...;
  - the unit, enabled (started at boot; not started now: configure the sensors first).
Running it again changes nothing that is already in place; when the source differs from
the one installed, the virtual environment is rebuilt and a running service restarted.

Options:
  --from SOURCE   what to install: a riverseal checkout (default: the one this script is
                  in, $(dirname "$here")), or a wheel or sdist file
  --wheels DIR    install offline: pip --no-index --find-links DIR (DIR holds the wheels of
                  riverseal's dependencies, and setuptools when SOURCE is a checkout)
  --python PATH   the Python (3.11 or newer, with venv) for the virtual environment
                  (default: /usr/bin/python3)
  --prefix DIR    install into DIR as if it were / (a throw-away root for tests): every path
                  is under DIR, the user goes into DIR/etc/passwd and DIR/etc/group, and
                  nothing on this machine is touched (no systemctl start, no udev reload).
                  The virtual environment in DIR runs only from where it is.
  --uninstall     stop and remove the service, its unit, the virtual environment, the udev
                  rules and the user; keep $ETC (the device key) and $DATA (the log)
  --purge         with --uninstall: remove $ETC and $DATA as well: the device key and
                  the log are gone for good
  -h, --help      this text
EOF
}

say() { printf '%s: %s\n' "$me" "$*"; }
warn() { printf '%s: warning: %s\n' "$me" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$me" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s\n(see %s --help)\n' "$me" "$*" "$0" >&2
    exit 2
}

mode=install
purge=0
prefix=
from=
wheels=
python=
while [ $# -gt 0 ]; do
    case $1 in
    --from | --wheels | --python | --prefix)
        [ $# -ge 2 ] || usage_error "$1 needs a value"
        opt=${1#--}
        val=$2
        shift 2
        ;;
    --from=* | --wheels=* | --python=* | --prefix=*)
        opt=${1%%=*}
        opt=${opt#--}
        val=${1#*=}
        shift
        ;;
    --uninstall)
        mode=uninstall
        shift
        continue
        ;;
    --purge)
        mode=uninstall
        purge=1
        shift
        continue
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) usage_error "unknown argument: $1" ;;
    esac
    [ -n "$val" ] || usage_error "--$opt needs a value"
    case $opt in
    from) from=$val ;;
    wheels) wheels=$val ;;
    python) python=$val ;;
    prefix) prefix=$val ;;
    esac
done

if [ -n "$prefix" ]; then
    mkdir -p "$prefix" || die "cannot make --prefix $prefix"
    prefix=$(cd "$prefix" && pwd -P)
    [ "$prefix" != / ] || usage_error "--prefix /: leave --prefix out to install on this machine"
elif [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0 $*), or give --prefix DIR to install into a throw-away root"
fi

# A path of the installed system as a path on this machine.
P() { printf '%s%s' "$prefix" "$1"; }

is_root() { [ "$(id -u)" = 0 ]; }
# systemd is this machine's init and we act on this machine (not on a --prefix root).
systemd_running() { [ -z "$prefix" ] && [ -d /run/systemd/system ]; }

work=$(mktemp -d "${TMPDIR:-/tmp}/riverseal-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- users and groups
# On this machine: useradd/usermod/userdel. Under --prefix: the entries are written into
# DIR/etc/{passwd,group} (and shadow, gshadow when DIR has them) here, so the machine's own
# user database is never touched.

# The numeric id of a user or group of the installed system ("" if it has none).
user_id() {
    if [ -n "$prefix" ]; then
        [ -f "$(P /etc/passwd)" ] || return 0
        awk -F: -v n="$1" '$1 == n { print $3 }' "$(P /etc/passwd)"
    else
        id -u "$1" 2>/dev/null || true
    fi
}
group_id() {
    if [ -n "$prefix" ]; then
        [ -f "$(P /etc/group)" ] || return 0
        awk -F: -v n="$1" '$1 == n { print $3 }' "$(P /etc/group)"
    else
        getent group "$1" | cut -d: -f3
    fi
}

# chown by the installed system's ids; skipped when not root (a --prefix test as a user).
own() { # OWNER GROUP PATH... (-R first for a tree)
    is_root || return 0
    local rec=
    if [ "$1" = -R ]; then
        rec=-R
        shift
    fi
    local uid gid
    uid=$(user_id "$1")
    gid=$(group_id "$2")
    if [ -z "$uid" ] || [ -z "$gid" ]; then die "no user $1 or group $2 to give ${3#"$prefix"} to"; fi
    shift 2
    chown -h $rec "$uid:$gid" "$@"
}

# Replace FILE by the content of NEW unless it is the same, keeping FILE's mode and owner
# (a copy beside FILE renamed over it).
replace_file() { # FILE NEW
    cmp -s "$1" "$2" && return 0
    cp "$2" "$1.riverseal-new"
    chmod --reference="$1" "$1.riverseal-new"
    if is_root; then chown --reference="$1" "$1.riverseal-new"; fi
    mv -f "$1.riverseal-new" "$1"
}

# A free id for a system user and its group (the same number in both), highest first as
# useradd --system does.
free_system_id() {
    awk -F: 'FNR == NR { used[$3] = 1; next } { used[$3] = 1 }
        END { for (i = 999; i >= 100; i--) if (!(i in used)) { print i; exit } }' \
        "$(P /etc/passwd)" "$(P /etc/group)"
}

# Add USER to the member list (field 4) of GROUP in a group or gshadow file.
add_member() { # FILE GROUP USER
    [ -f "$1" ] || return 0
    awk -F: -v OFS=: -v g="$2" -v u="$3" '
        $1 == g { n = split($4, m, ","); found = 0
                  for (i = 1; i <= n; i++) if (m[i] == u) found = 1
                  if (!found) $4 = ($4 == "" ? u : $4 "," u) }
        { print }' "$1" >"$work/edited"
    replace_file "$1" "$work/edited"
}

# Remove NAME's own line and NAME from every member list (fields 4, and 3 in gshadow).
remove_name() { # FILE NAME
    [ -f "$1" ] || return 0
    awk -F: -v OFS=: -v u="$2" -v gshadow="${1##*/}" '
        function drop(list,   n, m, i, out) {
            n = split(list, m, ","); out = ""
            for (i = 1; i <= n; i++) if (m[i] != u) out = (out == "" ? m[i] : out "," m[i])
            return out }
        $1 == u { next }
        NF >= 4 { $4 = drop($4); if (gshadow == "gshadow") $3 = drop($3) }
        { print }' "$1" >"$work/edited"
    replace_file "$1" "$work/edited"
}

ensure_user_prefix() {
    local etc passwd group id
    etc=$(P /etc)
    passwd=$etc/passwd
    group=$etc/group
    mkdir -p "$etc"
    [ -f "$passwd" ] || install -m 0644 /dev/null "$passwd"
    [ -f "$group" ] || install -m 0644 /dev/null "$group"
    if [ -z "$(group_id "$SERIAL_GROUP")" ]; then
        # Debian's fixed id for dialout (base-passwd), if free.
        id=20
        if awk -F: '$3 == 20 { f = 1 } END { exit !f }' "$group"; then id=$(free_system_id); fi
        printf '%s:x:%s:\n' "$SERIAL_GROUP" "$id" >>"$group"
        [ -f "$etc/gshadow" ] && printf '%s:*::\n' "$SERIAL_GROUP" >>"$etc/gshadow"
        say "added group $SERIAL_GROUP ($id) to $group"
    fi
    if [ -z "$(user_id "$SVC_USER")" ]; then
        [ -z "$(group_id "$SVC_USER")" ] || die "$group has a group $SVC_USER but $passwd no such user: remove it or add the user"
        id=$(free_system_id)
        [ -n "$id" ] || die "no free system id (100-999) in $passwd and $group"
        printf '%s:x:%s:\n' "$SVC_USER" "$id" >>"$group"
        printf '%s:x:%s:%s:riverseal gateway:%s:%s\n' "$SVC_USER" "$id" "$id" "$DATA" "$NOLOGIN" >>"$passwd"
        [ -f "$etc/shadow" ] && printf '%s:!:::::::\n' "$SVC_USER" >>"$etc/shadow"
        [ -f "$etc/gshadow" ] && printf '%s:!::\n' "$SVC_USER" >>"$etc/gshadow"
        say "added user $SVC_USER ($id) to $passwd"
    fi
    add_member "$group" "$SERIAL_GROUP" "$SVC_USER"
    add_member "$etc/gshadow" "$SERIAL_GROUP" "$SVC_USER"
}

ensure_user_host() {
    getent group "$SERIAL_GROUP" >/dev/null || groupadd --system "$SERIAL_GROUP"
    if ! getent passwd "$SVC_USER" >/dev/null; then
        useradd --system --user-group --home-dir "$DATA" --no-create-home \
            --shell "$NOLOGIN" --comment "riverseal gateway" --groups "$SERIAL_GROUP" "$SVC_USER" ||
            die "useradd $SVC_USER failed"
        say "added system user $SVC_USER ($(id -u "$SVC_USER"))"
    elif ! id -nG "$SVC_USER" | tr ' ' '\n' | grep -qx "$SERIAL_GROUP"; then
        usermod --append --groups "$SERIAL_GROUP" "$SVC_USER"
        say "added $SVC_USER to group $SERIAL_GROUP"
    fi
}

remove_user() {
    if [ -n "$prefix" ]; then
        local f
        if [ -n "$(user_id "$SVC_USER")" ]; then say "removed user $SVC_USER from $(P /etc/passwd)"; fi
        for f in passwd shadow group gshadow; do remove_name "$(P /etc/$f)" "$SVC_USER"; done
        return 0
    fi
    if getent passwd "$SVC_USER" >/dev/null; then
        userdel "$SVC_USER" || die "userdel $SVC_USER failed (a process of it still running?)"
        say "removed user $SVC_USER"
    fi
    if getent group "$SVC_USER" >/dev/null; then groupdel "$SVC_USER"; fi
}

# ---------------------------------------------------------------- files
changed=0

# Put SRC at DEST (a path of the installed system) with MODE, unless it is there already;
# file_changed says whether it was.
install_file() { # SRC DEST MODE
    local dest
    dest=$(P "$2")
    file_changed=0
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$1" "$dest"; then
        chmod "$3" "$dest"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$3" "$1" "$dest.riverseal-new"
    mv -f "$dest.riverseal-new" "$dest"
    say "installed $2"
    changed=1
    file_changed=1
}

# ---------------------------------------------------------------- the virtual environment
pick_python() {
    if [ -z "$python" ]; then
        if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=$(command -v python3 || true); fi
        [ -n "$python" ] || die "no python3: apt-get install python3 python3-venv"
    fi
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "$python is not Python 3.11 or newer (give one with --python)"
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        die "$python has no venv module: apt-get install python3-venv"
}

# Copy a checkout to $work/src: the files git knows of (tracked or not ignored), or without
# git everything but version control, virtual environments, caches and build output. pip
# then builds there, not in the checkout.
copy_checkout() {
    local src=$1 dest=$work/src
    mkdir -p "$dest"
    if command -v git >/dev/null && [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$src" ]; then
        (cd "$src" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            tar --null --files-from=- -cf -) | tar -C "$dest" -xf -
    else
        tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./.tools \
            --exclude=node_modules --exclude=./build --exclude=./dist --exclude='*.egg-info' \
            --exclude=__pycache__ --exclude='.*_cache' --exclude=./.hypothesis -cf - . |
            tar -C "$dest" -xf -
    fi
}

# Sets pip_target (what pip installs) and source_id (changes whenever the source does).
prepare_source() {
    local src=${from:-$(dirname "$here")}
    if [ -d "$src" ]; then
        src=$(cd "$src" && pwd -P)
        grep -qs '^name = "riverseal"' "$src/pyproject.toml" ||
            die "$src is not a riverseal checkout (no pyproject.toml naming riverseal); give --from DIR, WHEEL or SDIST"
        copy_checkout "$src"
        pip_target="$work/src[gateway]"
        source_id="checkout $(cd "$work/src" && find . -type f -print0 | LC_ALL=C sort -z |
            xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
        source_desc="the checkout $src"
    elif [ -f "$src" ]; then
        case $src in
        *.whl | *.tar.gz | *.zip) ;;
        *) die "--from $src: not a wheel (.whl) or sdist (.tar.gz, .zip)" ;;
        esac
        src=$(cd "$(dirname "$src")" && pwd -P)/$(basename "$src")
        pip_target="${src}[gateway]"
        source_id="file $(basename "$src") $(sha256sum "$src" | cut -d' ' -f1)"
        source_desc=$src
    else
        die "--from $src: no such directory or file"
    fi
    source_id="$source_id
python $("$python" -c 'import sys; print(sys.executable, "%d.%d" % sys.version_info[:2])')"
}

ensure_venv() {
    local venv stamp
    venv=$(P "$VENV")
    stamp=$(P "$STAMP")
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$source_id" ] && [ -x "$venv/bin/gateway" ] &&
        "$venv/bin/python" -B -c 'import gateway.cli' 2>/dev/null; then
        say "$VENV is up to date ($source_desc)"
        return 0
    fi
    say "installing riverseal[gateway] from $source_desc into $VENV"
    mkdir -p "$(P "$OPT")"
    chmod 0755 "$(P "$OPT")"
    rm -rf "$venv.old"
    [ ! -e "$venv" ] || mv "$venv" "$venv.old"
    local pip_opts=(--disable-pip-version-check --no-input --quiet)
    [ -z "$wheels" ] || pip_opts+=(--no-index --find-links "$(cd "$wheels" && pwd -P)")
    if ! { "$python" -m venv "$venv" && "$venv/bin/python" -m pip install "${pip_opts[@]}" "$pip_target"; }; then
        rm -rf "$venv"
        if [ -e "$venv.old" ]; then mv "$venv.old" "$venv"; fi
        die "pip could not install riverseal[gateway] from $source_desc (see above); nothing was changed"
    fi
    rm -rf "$venv.old"
    printf '%s\n' "$source_id" >"$stamp"
    say "installed riverseal $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("riverseal"))')"
    changed=1
    venv_changed=1
}

# ---------------------------------------------------------------- configuration and data
# Read key_file and data_dir from gateway.toml (paths of the installed system) as two lines.
config_paths() {
    "$python" - "$(P "$CONFIG")" "$ETC" <<'EOF'
import sys, tomllib
from pathlib import PurePosixPath as P
with open(sys.argv[1], "rb") as f:
    device = tomllib.load(f).get("device", {})
base = P(sys.argv[2])
print(base / device.get("key_file", "device.key"))
print(base / device.get("data_dir", "data"))
EOF
}

ensure_config() {
    local etc keydir
    etc=$(P "$ETC")
    keydir=$(P "$KEYDIR")
    mkdir -p "$etc" "$keydir"
    own root "$SVC_USER" "$etc"
    chmod 0750 "$etc"
    if [ ! -e "$(P "$CONFIG")" ]; then
        if [ -e "$keydir/device.key" ] || [ -e "$etc/device.key" ]; then
            warn "$ETC has a device key but no gateway.toml; none is written (the key is kept as it is): write $CONFIG from deploy/gateway.example.toml"
        else
            init_config
        fi
    fi
    own -R "$SVC_USER" "$SVC_USER" "$keydir"
    chmod 0700 "$keydir"
    [ ! -f "$(P "$CONFIG")" ] || {
        own root "$SVC_USER" "$(P "$CONFIG")"
        chmod 0640 "$(P "$CONFIG")"
    }
    [ ! -f "$etc/trust.txt" ] || {
        own root "$SVC_USER" "$etc/trust.txt"
        chmod 0644 "$etc/trust.txt"
    }
    check_config
}

# A first install: `gateway init` in a staging directory, then the key into key/ and the
# config with key_file = "key/device.key" and data_dir = "/var/lib/riverseal".
init_config() {
    local etc stage
    etc=$(P "$ETC")
    stage=$(mktemp -d "$etc/.init.XXXXXX")
    if ! "$(P "$VENV")/bin/gateway" init "$stage" >"$work/init.out" 2>&1; then
        cat "$work/init.out" >&2
        rm -rf "$stage"
        die "gateway init failed"
    fi
    sed -e 's|^key_file = "device.key"|key_file = "key/device.key"|' \
        -e "s|^data_dir = \"data\"|data_dir = \"$DATA\"|" \
        -e "s|--config $stage/gateway.toml|--config $CONFIG|" "$stage/gateway.toml" >"$stage/gateway.toml.new"
    mv -f "$stage/gateway.toml.new" "$stage/gateway.toml"
    local paths
    paths=$("$python" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    device = tomllib.load(f).get("device", {})
print(device.get("key_file"), device.get("data_dir"))' "$stage/gateway.toml")
    if [ "$paths" != "key/device.key $DATA" ]; then
        rm -rf "$stage"
        die "gateway init's gateway.toml changed form ([device] key_file, data_dir not found as expected): update deploy/install.sh"
    fi
    # The key first: a key is never lost or replaced (mv -n), the config last.
    mv -n "$stage/device.key" "$(P "$KEYDIR")/device.key"
    [ ! -e "$stage/device.key" ] || die "$KEYDIR/device.key appeared meanwhile; kept it, $stage has the new one"
    mv -f "$stage/trust.txt" "$etc/trust.txt" # the new key's line: an older file is stale
    mv -n "$stage/gateway.toml" "$(P "$CONFIG")"
    rm -rf "$stage"
    say "made the device key $KEYDIR/device.key, $CONFIG and $ETC/trust.txt:"
    grep -E '^(device id|verifier key):' "$work/init.out" | sed 's/^/    /'
    say "send the verifier key (trust.txt) to the regulator"
    changed=1
}

# Warn about what the unit will not let the daemon do with this configuration.
check_config() {
    [ -f "$(P "$CONFIG")" ] || return 0
    local out key_file data_dir
    if ! out=$(config_paths 2>&1); then
        warn "cannot read $CONFIG: ${out##*$'\n'}"
        return 0
    fi
    key_file=$(sed -n 1p <<<"$out")
    data_dir=$(sed -n 2p <<<"$out")
    [ -e "$(P "$key_file")" ] || warn "$CONFIG names the device key $key_file, which does not exist"
    if [ "$(dirname "$key_file")" != "$KEYDIR" ]; then
        warn "$CONFIG keeps the device key in $(dirname "$key_file"); the service may write only in $KEYDIR and $DATA, and it rewrites $key_file.history beside the key: move the key and its .history file into $KEYDIR/ and set key_file = \"key/$(basename "$key_file")\""
    fi
    [ "$data_dir" = "$DATA" ] ||
        warn "$CONFIG has data_dir = \"$data_dir\"; the service may write only $DATA (its StateDirectory): set data_dir = \"$DATA\""
}

ensure_data() {
    local data
    data=$(P "$DATA")
    mkdir -p "$data"
    own -R "$SVC_USER" "$SVC_USER" "$data"
    chmod 0700 "$data"
}

ensure_bin_link() {
    local link target
    link=$(P "$BIN_LINK")
    target=$VENV/bin/gateway
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then return 0; fi
    if [ -e "$link" ] || [ -L "$link" ]; then
        warn "$BIN_LINK exists and is not a link to $target: left as it is"
        return 0
    fi
    mkdir -p "$(dirname "$link")"
    ln -s "$target" "$link"
    say "linked $BIN_LINK -> $target"
    changed=1
}

# ---------------------------------------------------------------- systemd and udev
enable_unit() {
    local link
    link=$(P "$WANTS/$SERVICE")
    if systemd_running; then
        systemctl is-enabled --quiet "$SERVICE" 2>/dev/null && return 0
        systemctl enable --quiet "$SERVICE"
    elif [ -L "$link" ] && [ "$(readlink "$link")" = "$UNIT" ]; then
        return 0
    elif command -v systemctl >/dev/null; then
        systemctl --root="${prefix:-/}" enable --quiet "$SERVICE"
    else
        mkdir -p "$(P "$WANTS")"
        ln -sfn "$UNIT" "$link"
    fi
    say "enabled $SERVICE (starts at boot)"
    changed=1
}

disable_unit() {
    local link
    link=$(P "$WANTS/$SERVICE")
    if systemd_running && [ -e "$UNIT" ]; then
        systemctl disable --now --quiet "$SERVICE" || warn "systemctl disable --now $SERVICE failed"
    elif [ -e "$(P "$UNIT")" ] && command -v systemctl >/dev/null; then
        systemctl --root="${prefix:-/}" disable --quiet "$SERVICE" || true
    fi
    if [ -L "$link" ]; then rm -f "$link"; fi
    if [ -e "$(P "$UNIT")" ]; then say "disabled $SERVICE"; fi
}

udev_reload() {
    [ -z "$prefix" ] && [ -S /run/udev/control ] || return 0
    if ! { udevadm control --reload-rules && udevadm trigger --action=change --subsystem-match=tty; }; then
        warn "udevadm could not reload the rules; they apply from the next boot or replug"
    fi
}

# ---------------------------------------------------------------- install / uninstall
do_install() {
    venv_changed=0
    pick_python
    for f in "$here/$SERVICE" "$here/${RULES##*/}"; do
        [ -f "$f" ] || die "$f is missing: run $me from a riverseal checkout's deploy/"
    done
    prepare_source
    ensure_venv
    if [ -n "$prefix" ]; then ensure_user_prefix; else ensure_user_host; fi
    ensure_bin_link
    ensure_config
    ensure_data
    local unit_changed rules_changed
    install_file "$here/$SERVICE" "$UNIT" 0644
    unit_changed=$file_changed
    install_file "$here/${RULES##*/}" "$RULES" 0644
    rules_changed=$file_changed
    if [ $unit_changed = 1 ] && systemd_running; then systemctl daemon-reload; fi
    enable_unit
    if [ $rules_changed = 1 ]; then udev_reload; fi
    if systemd_running && [ $((unit_changed + venv_changed)) -gt 0 ] &&
        systemctl is-active --quiet "$SERVICE"; then
        systemctl restart "$SERVICE"
        say "restarted $SERVICE"
    fi
    if [ $changed = 0 ]; then
        say "nothing to change: riverseal is installed${prefix:+ in $prefix}"
    else
        local as_user="sudo -u $SVC_USER"
        command -v sudo >/dev/null || as_user="runuser -u $SVC_USER --"
        say "done${prefix:+ (in $prefix)}. Next:"
        cat <<EOF
    \$EDITOR $CONFIG      # one [[sensor]] per probe, ports as /dev/riverseal/usb-...
    $as_user gateway check --config $CONFIG
    systemctl start riverseal-gateway && systemctl status riverseal-gateway
EOF
    fi
}

do_uninstall() {
    local path
    disable_unit
    for path in "$UNIT" "$RULES"; do
        if [ -e "$(P "$path")" ]; then
            rm -f "$(P "$path")"
            say "removed $path"
        fi
    done
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "$SERVICE" 2>/dev/null || true
    fi
    udev_reload
    if [ -L "$(P "$BIN_LINK")" ] && [ "$(readlink "$(P "$BIN_LINK")")" = "$VENV/bin/gateway" ]; then
        rm -f "$(P "$BIN_LINK")"
    fi
    if [ -e "$(P "$OPT")" ]; then
        rm -rf "$(P "$OPT")"
        say "removed $OPT"
    fi
    remove_user
    if [ $purge = 1 ]; then
        for path in "$ETC" "$DATA" "$UNIT.d"; do
            if [ -e "$(P "$path")" ]; then
                rm -rf "$(P "$path")"
                say "removed $path"
            fi
        done
        say "purged: the device key and the log are gone"
    else
        for path in "$ETC" "$DATA"; do
            [ ! -e "$(P "$path")" ] || say "kept $path (--purge removes it)"
        done
    fi
}

if [ $mode = install ]; then do_install; else do_uninstall; fi
