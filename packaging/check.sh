#!/usr/bin/env bash
# Checks the packages packaging/build.sh made. Run it as root on a throwaway machine or
# container: it INSTALLS, upgrades, removes and purges the .deb on this machine (and
# refuses to start if infadaptd is already installed here), and installs and erases the
# .rpm with `rpm` (removing the infadaptd user in between).
#   1. the .deb and .rpm hold exactly the files of packaging/expected-files.txt, with their
#      modes, and exactly its `config` files as conffiles;
#   2. the unit scores 2.0 or less in `systemd-analyze security --offline=yes`, alone and
#      with the process/GPU drop-in;
#   3. the .deb installs (service user, state directory, unit enabled but not started),
#      `systemd-analyze verify` is clean, the installed `infadaptd validate` accepts the
#      installed configuration as the service user, the installed daemon starts as that
#      user, answers /healthz and writes state; an upgrade (to a repacked newer revision
#      with a changed default configuration) keeps an edited configuration; remove keeps
#      configuration and state; purge removes both;
#   4. the .rpm installs with its scriptlets (user, state directory, unit enabled and not
#      started), passes `rpm --verify`, its `infadaptd validate` accepts its configuration;
#      erasing it disables the unit and keeps the edited configuration as .rpmsave.
# Every failure prints what differs and exits 1. Usage: packaging/check.sh [PACKAGE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PACKAGE_DIR=${1:-$TARGET_DIR/packages}
EXPECTED=packaging/expected-files.txt
UNIT=packaging/systemd/infadaptd.service
DROP_IN=packaging/systemd/process-gpu.conf
MAX_EXPOSURE=2.0
HTTP_PORT=9187 # the packaged configuration's listen port

WORK=$(mktemp -d)
DAEMON_PID=
cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "== $*"; }
# dpkg's status of infadaptd, empty when dpkg does not know it or it is fully purged.
dpkg_status() {
    local status
    status=$(dpkg-query -W -f '${Status}' infadaptd 2>/dev/null || true)
    case "$status" in
    *not-installed) echo "" ;;
    *) echo "$status" ;;
    esac
}

# ---------------------------------------------------------------------------------------
step "packages in $PACKAGE_DIR"
shopt -s nullglob
debs=("$PACKAGE_DIR"/infadaptd_*.deb)
rpms=("$PACKAGE_DIR"/infadaptd-*.rpm)
shopt -u nullglob
[ ${#debs[@]} -eq 1 ] || fail "expected one infadaptd .deb in $PACKAGE_DIR, found ${#debs[@]} (run packaging/build.sh)"
[ ${#rpms[@]} -eq 1 ] || fail "expected one infadaptd .rpm in $PACKAGE_DIR, found ${#rpms[@]} (run packaging/build.sh)"
DEB=${debs[0]}
RPM=${rpms[0]}
for tool in dpkg-deb dpkg rpm systemd-analyze; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
echo "$DEB"
echo "$RPM"

# expected_list FORMAT [config]: "mode path" lines (or paths of config files), sorted.
expected_list() {
    local format=$1 want_config=${2:-}
    awk -v format="$format" -v want_config="$want_config" '
        /^[[:space:]]*(#|$)/ { next }
        {
            only = ""; config = 0
            for (i = 3; i <= NF; i++) {
                if ($i == "deb" || $i == "rpm") only = $i
                else if ($i == "config") config = 1
                else { print "unknown flag " $i " in line: " $0 > "/dev/stderr"; exit 1 }
            }
            if (only != "" && only != format) next
            if (want_config != "") { if (config) print $2 }
            else print $1 " " $2
        }' "$EXPECTED" | LC_ALL=C sort
}

# compare WHAT EXPECTED_FILE ACTUAL_FILE
compare() {
    if ! diff -u "$2" "$3" >"$WORK/diff"; then
        echo "--- expected (packaging/expected-files.txt)  +++ actual" >&2
        cat "$WORK/diff" >&2
        fail "$1 differs from packaging/expected-files.txt"
    fi
    echo "$1: $(wc -l <"$3") entries as expected"
}

# ---------------------------------------------------------------------------------------
step "contents"
expected_list deb >"$WORK/deb.expected"
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { path = $6; sub(/^\./, "", path); print $1 " " path }' |
    LC_ALL=C sort >"$WORK/deb.actual"
compare ".deb files (dpkg-deb -c)" "$WORK/deb.expected" "$WORK/deb.actual"

expected_list rpm >"$WORK/rpm.expected"
rpm -qp --queryformat '[%{FILEMODES:perms} %{FILENAMES}\n]' "$RPM" | LC_ALL=C sort >"$WORK/rpm.actual"
compare ".rpm files (rpm -qp)" "$WORK/rpm.expected" "$WORK/rpm.actual"
# rpm -qlp lists the same paths
rpm -qlp "$RPM" | LC_ALL=C sort >"$WORK/rpm.paths"
awk '{ print $2 }' "$WORK/rpm.expected" | LC_ALL=C sort >"$WORK/rpm.paths.expected"
compare ".rpm paths (rpm -qlp)" "$WORK/rpm.paths.expected" "$WORK/rpm.paths"

expected_list deb config >"$WORK/deb.conffiles.expected"
dpkg-deb -I "$DEB" conffiles | LC_ALL=C sort >"$WORK/deb.conffiles"
compare ".deb conffiles" "$WORK/deb.conffiles.expected" "$WORK/deb.conffiles"
expected_list rpm config >"$WORK/rpm.config.expected"
rpm -qcp "$RPM" | LC_ALL=C sort >"$WORK/rpm.config"
compare ".rpm config files" "$WORK/rpm.config.expected" "$WORK/rpm.config"
rpm -qp --queryformat '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" | awk '$1 ~ /c/' |
    while read -r flags path; do
        [[ $flags == *n* ]] || fail "$path is %config without noreplace (an upgrade would overwrite local edits)"
    done

step "maintainer scripts"
dpkg-deb -e "$DEB" "$WORK/control"
for script in postinst prerm postrm; do
    [ -x "$WORK/control/$script" ] || fail ".deb has no executable $script"
    sh -n "$WORK/control/$script" || fail ".deb $script: shell syntax error"
done
grep -q 'deb-systemd-helper enable infadaptd.service' "$WORK/control/postinst" ||
    fail ".deb postinst does not enable the unit"
if grep -Eq 'deb-systemd-invoke (start|restart) ' "$WORK/control/postinst"; then
    fail ".deb postinst starts the service on install (it must only be enabled)"
fi
rpm -qp --scripts "$RPM" >"$WORK/rpm.scripts"
for scriptlet in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$scriptlet scriptlet" "$WORK/rpm.scripts" || fail ".rpm has no $scriptlet scriptlet"
done
# what the scripts call is declared
depends=$(dpkg-deb -f "$DEB" Depends)
for need in adduser init-system-helpers; do
    [[ ", $depends," == *", $need"[,\ ]* ]] || fail ".deb does not depend on $need (Depends: $depends)"
done
rpm_requires=$(rpm -qp --requires "$RPM")
for need in /usr/sbin/useradd /usr/sbin/groupadd /bin/sh; do
    grep -qx "$need" <<<"$rpm_requires" || fail ".rpm does not require $need"
done
for script in packaging/rpm/*.sh; do
    sh -n "$script" || fail "$script: shell syntax error"
done

# ---------------------------------------------------------------------------------------
step "systemd-analyze security --offline=yes (at most $MAX_EXPOSURE)"
# exposure ROOT: the overall exposure of infadaptd.service found in ROOT's unit paths
exposure() {
    local output
    output=$(systemd-analyze security --offline=yes --root="$1" infadaptd.service 2>&1) ||
        fail "systemd-analyze security failed: $output"
    sed -n 's/.*Overall exposure level for infadaptd.service: \([0-9.]*\).*/\1/p' <<<"$output"
}
check_exposure() {
    local what=$1 score=$2
    [ -n "$score" ] || fail "no exposure level for $what"
    awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s <= max) }' ||
        fail "$what: exposure $score is above $MAX_EXPOSURE"
    echo "$what: exposure $score"
}
mkdir -p "$WORK/root/etc/systemd/system"
cp "$UNIT" "$WORK/root/etc/systemd/system/"
check_exposure "infadaptd.service" "$(exposure "$WORK/root")"
mkdir -p "$WORK/root/etc/systemd/system/infadaptd.service.d"
cp "$DROP_IN" "$WORK/root/etc/systemd/system/infadaptd.service.d/"
check_exposure "infadaptd.service + process-gpu.conf" "$(exposure "$WORK/root")"

# ---------------------------------------------------------------------------------------
step "install the .deb"
[ "$(id -u)" -eq 0 ] || fail "installing the .deb needs root"
if [ -n "$(dpkg_status)" ] || rpm -q infadaptd >/dev/null 2>&1; then
    fail "infadaptd is already installed (or its configuration is left) on this machine; this check installs and purges it, so it runs only where it is absent (dpkg -P infadaptd)"
fi
dpkg -i "$DEB"
getent passwd infadaptd >/dev/null || fail "the service user infadaptd was not created"
[ "$(stat -c '%U:%G %a' /var/lib/infadaptd)" = "infadaptd:infadaptd 750" ] ||
    fail "/var/lib/infadaptd is $(stat -c '%U:%G %a' /var/lib/infadaptd), expected infadaptd:infadaptd 750"
[ -L /etc/systemd/system/multi-user.target.wants/infadaptd.service ] ||
    fail "the unit is not enabled (no multi-user.target.wants link)"
if pgrep -x -u infadaptd infadaptd >/dev/null; then
    fail "infadaptd is running after install (it must be enabled, not started)"
fi
for path in /usr/bin/infadaptd /usr/lib/infadaptd/plugins/libinfadapt_plugin_sim.so \
    /etc/infadaptd/infadaptd.toml /usr/lib/systemd/system/infadaptd.service; do
    [ -e "$path" ] || fail "$path is missing after install"
done
version=$(/usr/bin/infadaptd --version) || fail "infadaptd --version failed"
[[ $version == "infadaptd "* ]] || fail "infadaptd --version printed: $version"

step "systemd-analyze verify"
verify_unit() {
    local output
    if ! output=$(systemd-analyze verify infadaptd.service 2>&1) || [ -n "$output" ]; then
        echo "$output" >&2
        fail "systemd-analyze verify infadaptd.service is not clean ($1)"
    fi
    echo "clean ($1)"
}
verify_unit "installed unit"
mkdir -p /etc/systemd/system/infadaptd.service.d
cp /usr/share/infadaptd/systemd/process-gpu.conf /etc/systemd/system/infadaptd.service.d/
verify_unit "with the process-gpu.conf drop-in"
rm -r /etc/systemd/system/infadaptd.service.d

step "installed validate, man page, completions"
validate_output=$(runuser -u infadaptd -- /usr/bin/infadaptd validate --config /etc/infadaptd/infadaptd.toml 2>&1) ||
    fail "the installed infadaptd validate rejects the installed configuration: $validate_output"
echo "$validate_output"
grep -q 'ok (1 pipeline: resnet \[sim\])' <<<"$validate_output" || fail "unexpected validate output"
runuser -u infadaptd -- /usr/bin/infadaptd validate >/dev/null ||
    fail "validate without --config does not find /etc/infadaptd/infadaptd.toml"
man_source=$(zcat /usr/share/man/man1/infadaptd.1.gz)
grep -q '^\.TH infadaptd 1' <<<"$man_source" || fail "man page infadaptd(1)"
if command -v man >/dev/null; then
    man -w infadaptd >/dev/null || fail "man cannot find infadaptd(1)"
fi
bash -c 'source /usr/share/bash-completion/completions/infadaptd && complete -p infadaptd' >/dev/null ||
    fail "the bash completion does not load"

step "run the installed daemon as the service user"
# What the unit does, without a service manager: the service user, STATE_DIRECTORY, the
# packaged configuration. It must answer /healthz, then stop on SIGTERM and leave state.
http_get() {
    exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
    timeout 5 cat <&3
    exec 3<&-
}
if http_get /healthz >/dev/null 2>&1; then
    fail "port $HTTP_PORT is already in use; the packaged configuration listens there"
fi
# setpriv and env exec, so $! is the daemon itself
setpriv --reuid=infadaptd --regid=infadaptd --init-groups \
    env STATE_DIRECTORY=/var/lib/infadaptd RUST_LOG=info NO_COLOR=1 \
    /usr/bin/infadaptd run --config /etc/infadaptd/infadaptd.toml >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
healthy=
for _ in $(seq 1 100); do
    response=$(http_get /healthz 2>/dev/null || true)
    if grep -q '^HTTP/1.[01] 200' <<<"$response"; then
        healthy=yes
        break
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$healthy" ]; then
    cat "$WORK/daemon.log" >&2
    fail "the installed daemon did not answer /healthz on port $HTTP_PORT within 20 s"
fi
echo "/healthz answered"
kill -TERM "$DAEMON_PID"
daemon_status=0
timeout 30 tail --pid="$DAEMON_PID" -f /dev/null || fail "the daemon did not stop within 30 s of SIGTERM"
wait "$DAEMON_PID" || daemon_status=$?
DAEMON_PID=
[ "$daemon_status" -eq 0 ] || {
    cat "$WORK/daemon.log" >&2
    fail "the daemon exited with $daemon_status after SIGTERM"
}
state_files=$(find /var/lib/infadaptd -type f | wc -l)
[ "$state_files" -gt 0 ] || fail "the daemon left no state in /var/lib/infadaptd"
[ -z "$(find /var/lib/infadaptd -not -user infadaptd)" ] ||
    fail "files in /var/lib/infadaptd not owned by infadaptd: $(find /var/lib/infadaptd -not -user infadaptd)"
echo "stopped with 0, $state_files state file(s)"

step "upgrade keeps an edited configuration"
# A newer revision of the package whose default configuration changed, made by repacking
# this one: dpkg must keep the operator's file and put the new default beside it.
dpkg-deb -R "$DEB" "$WORK/next"
sed -i 's/^Version: .*/&+next/' "$WORK/next/DEBIAN/control"
echo "# a changed default" >>"$WORK/next/etc/infadaptd/infadaptd.toml"
(cd "$WORK/next" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -b "$WORK/next" "$WORK/next.deb" >/dev/null
old_version=$(dpkg-query -W -f '${Version}' infadaptd)
echo "# edited by the operator" >>/etc/infadaptd/infadaptd.toml
dpkg -i --force-confdef --force-confold "$WORK/next.deb"
new_version=$(dpkg-query -W -f '${Version}' infadaptd)
[ "$new_version" = "$old_version+next" ] || fail "upgrade from $old_version gave $new_version"
grep -q '^# edited by the operator$' /etc/infadaptd/infadaptd.toml || fail "the upgrade lost the edit to the configuration"
grep -q '^# a changed default$' /etc/infadaptd/infadaptd.toml.dpkg-dist ||
    fail "the upgrade did not leave the new default as /etc/infadaptd/infadaptd.toml.dpkg-dist"
[ "$(find /var/lib/infadaptd -type f | wc -l)" -eq "$state_files" ] || fail "the upgrade changed the state"
[ -L /etc/systemd/system/multi-user.target.wants/infadaptd.service ] || fail "the upgrade disabled the unit"
getent passwd infadaptd >/dev/null || fail "the upgrade lost the service user"
echo "$old_version -> $new_version: edit kept, new default in .dpkg-dist"

step "remove keeps configuration and state"
dpkg -r infadaptd
[ ! -e /usr/bin/infadaptd ] || fail "/usr/bin/infadaptd is left after remove"
[ ! -e /usr/lib/infadaptd/plugins/libinfadapt_plugin_sim.so ] || fail "the plugin is left after remove"
grep -q '^# edited by the operator$' /etc/infadaptd/infadaptd.toml || fail "remove did not keep the configuration"
[ -f /etc/infadaptd/catalogs/resnet-synthetic.toml ] || fail "remove did not keep the catalog"
[ "$(find /var/lib/infadaptd -type f | wc -l)" -eq "$state_files" ] || fail "remove did not keep the state"
[ ! -e /etc/systemd/system/multi-user.target.wants/infadaptd.service ] || fail "the unit is still enabled after remove"

step "purge removes configuration and state"
dpkg -P infadaptd
for path in /etc/infadaptd /var/lib/infadaptd /usr/lib/infadaptd /usr/share/infadaptd \
    /etc/systemd/system/infadaptd.service /etc/systemd/system/multi-user.target.wants/infadaptd.service; do
    if [ -e "$path" ] || [ -L "$path" ]; then
        fail "$path is left after purge"
    fi
done
[ -z "$(dpkg_status)" ] || fail "dpkg still knows infadaptd after purge: $(dpkg_status)"
echo "purged"

# ---------------------------------------------------------------------------------------
step "install and erase the .rpm (its scriptlets run on this machine)"
# The .deb's purge keeps the service user (the Debian habit); remove it so that the .rpm's
# %pre has to create it. Dependencies are not checked: this is not an RPM distribution.
userdel infadaptd 2>/dev/null || true
groupdel infadaptd 2>/dev/null || true
rpm_flags=(--nodeps)
if rpm --help 2>&1 | grep -q -- '--force-debian'; then
    rpm_flags+=(--force-debian) # Debian's rpm refuses to install without it
fi
rpm --install "${rpm_flags[@]}" "$RPM"
getent passwd infadaptd >/dev/null || fail ".rpm %pre did not create the service user"
[ "$(stat -c '%U:%G %a' /var/lib/infadaptd)" = "infadaptd:infadaptd 750" ] ||
    fail ".rpm: /var/lib/infadaptd is $(stat -c '%U:%G %a' /var/lib/infadaptd), expected infadaptd:infadaptd 750"
[ -L /etc/systemd/system/multi-user.target.wants/infadaptd.service ] || fail ".rpm %post did not enable the unit"
if pgrep -x -u infadaptd infadaptd >/dev/null; then
    fail "infadaptd is running after the .rpm install (it must be enabled, not started)"
fi
rpm --verify --nodeps infadaptd || fail "rpm --verify infadaptd"
rpm_validate=$(runuser -u infadaptd -- /usr/bin/infadaptd validate 2>&1) ||
    fail "the .rpm's infadaptd validate rejects its configuration: $rpm_validate"
echo "$rpm_validate"
echo "# edited by the operator" >>/etc/infadaptd/infadaptd.toml
rpm --erase "${rpm_flags[@]}" infadaptd
[ ! -e /usr/bin/infadaptd ] || fail "erasing the .rpm left /usr/bin/infadaptd"
[ ! -e /etc/systemd/system/multi-user.target.wants/infadaptd.service ] || fail ".rpm %preun did not disable the unit"
grep -q '^# edited by the operator$' /etc/infadaptd/infadaptd.toml.rpmsave ||
    fail "erasing the .rpm did not keep the edited configuration as .rpmsave"
[ -d /var/lib/infadaptd ] || fail "erasing the .rpm removed the state directory"
rpm -q infadaptd >/dev/null 2>&1 && fail "rpm still knows infadaptd after erase"
# What RPM leaves by design (edited configuration, state) and the user go by hand.
rm -rf /etc/infadaptd /var/lib/infadaptd
userdel infadaptd 2>/dev/null || true
groupdel infadaptd 2>/dev/null || true
echo "installed, enabled, validated, erased"

echo "packages OK"
