#!/usr/bin/env bash
# engine.sh: the private Docker engine and local image registry that development, tests and CI
# use. Real containers, never a mock; nothing is pulled from the internet.
#
#   scripts/engine.sh up       start (idempotent); last stdout line is DOCKER_HOST=...
#   scripts/engine.sh host     print the DOCKER_HOST value (starts nothing)
#   scripts/engine.sh status   say what runs
#   scripts/engine.sh down     stop what `up` started (main: every engine of this checkout)
#
# ENGINE_NAME=<name> (default main) selects a second engine for multi-device tests: it lives
# under .state/docker-<name>/, has no default bridge (--bridge=none), no iptables rules, its own
# address pool, and no registry (it uses the main one on 127.0.0.1:5000). Progress goes to
# stderr. See docs/engine.md.
set -euo pipefail
# dockerd, iptables and ip live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STATE="$REPO/.state"
ENGINE_NAME=${ENGINE_NAME:-main}
[[ $ENGINE_NAME =~ ^[a-z0-9][a-z0-9-]{0,15}$ ]] || {
	echo "engine.sh: bad ENGINE_NAME '$ENGINE_NAME' (want [a-z0-9-], at most 16)" >&2
	exit 2
}
if [[ $ENGINE_NAME == main ]]; then DDIR="$STATE/docker"; else DDIR="$STATE/docker-$ENGINE_NAME"; fi
DATA="$DDIR/data"
EXEC="$DDIR/exec"
PIDFILE="$DDIR/docker.pid"
SOCK="$DDIR/docker.sock"
LOG="$DDIR/dockerd.log"
CONF="$DDIR/daemon.json"
MODEFILE="$DDIR/mode"
# containerd's sockets live under the exec root and unix socket paths max out at 108 bytes:
# a checkout in a deep folder gets its exec root and socket under /run instead.
if ((${#EXEC} > 60)); then
	RUNBASE="/run/balena-py-$(printf %s "$DDIR" | sha1sum | cut -c1-12)"
	EXEC="$RUNBASE/exec"
	SOCK="$RUNBASE/docker.sock"
fi

# The main engine's default bridge is ours, not docker0: a dockerd started with --bridge=none
# or with default address pools deletes docker0 (even one that another dockerd uses).
MAIN_BRIDGE=bpy-main
# A second engine's networks come from its own 10.<200+k>.0.0/16 (see sec_pool).
POOLFILE="$DDIR/pool"

REG_ADDR=127.0.0.1:5000
REG_DIR="$STATE/registry"
REG_PIDFILE="$REG_DIR/registry.pid"
REG_CONF="$REG_DIR/config.yml"
REG_LOG="$REG_DIR/registry.log"
BASE_REPO=balena-py/busybox
DEMO_REPO=balena-py/demo
BASE_REF="$REG_ADDR/$BASE_REPO:latest"
DEMO_REF="$REG_ADDR/$DEMO_REPO:latest"

# Keep the CLI away from ~/.docker (credential helpers) and off BuildKit (no buildx here).
export DOCKER_CONFIG="$STATE/docker-cli"
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
export DEBIAN_FRONTEND=noninteractive

log() { printf 'engine.sh[%s]: %s\n' "$ENGINE_NAME" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------- probes

# engine_answers URL: true when a Docker engine answers there.
engine_answers() {
	[[ -n $1 ]] || return 1
	if [[ $1 == unix://* ]]; then [[ -S ${1#unix://} ]] || return 1; fi
	timeout 10 docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# http_head URL [accept]: print the HTTP status (000 when nothing answers) and, on a
# second line, the Docker-Content-Digest header. python3 is always there; curl may not be.
http_head() {
	python3 - "$@" <<'EOF'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], method="HEAD")
if len(sys.argv) > 2:
    req.add_header("Accept", sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status); print(r.headers.get("Docker-Content-Digest", ""))
except urllib.error.HTTPError as e:
    print(e.code); print("")
except Exception:
    print("000"); print("")
EOF
}
registry_answers() {
	local out
	out=$(http_head "http://$REG_ADDR/v2/")
	[[ ${out%%$'\n'*} == 200 ]]
}
# registry_digest REPO TAG: the manifest digest the registry holds, or nothing.
registry_digest() {
	local out
	out=$(http_head "http://$REG_ADDR/v2/$1/manifests/$2" \
		"application/vnd.docker.distribution.manifest.v2+json")
	[[ ${out%%$'\n'*} == 200 ]] && echo "${out#*$'\n'}"
	return 0
}

# pid_alive PID: running, and not a zombie (this machine's init reaps orphans only slowly).
pid_alive() {
	[[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}
cmdline_of() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }
# pids_with NEEDLE: processes whose command line mentions NEEDLE (bash matching, so the
# search itself never matches).
pids_with() {
	local p cmd
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[[ $p == "$$" || $p == "$BASHPID" ]] && continue
		cmd=$(cmdline_of "$p")
		[[ $cmd == *"$1"* ]] && echo "$p"
	done
	return 0
}
ppid_of() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	echo "$2"
}
# tree_of PID: PID and all its descendants (container processes hang under their shim).
tree_of() {
	local root=$1 p changed=1
	local -A in_tree=([$root]=1)
	local -A parent=()
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		parent[$p]=$(ppid_of "$p" || echo 0)
	done
	while ((changed)); do
		changed=0
		for p in "${!parent[@]}"; do
			if [[ -z ${in_tree[$p]:-} && -n ${in_tree[${parent[$p]}]:-} ]]; then
				in_tree[$p]=1
				changed=1
			fi
		done
	done
	printf '%s\n' "${!in_tree[@]}"
}
# stop_pid PID SECONDS: TERM, wait, then KILL.
stop_pid() {
	local pid=$1 i
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < $2 * 5; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.2
	done
	log "pid $pid ignored SIGTERM for $2 s: SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 25; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.2
	done
	log "pid $pid is still alive after SIGKILL"
}
# kill_leftovers: every process that names our data or exec root (dockerd, containerd,
# shims) together with its descendants (container processes).
kill_leftovers() {
	local needle p q victims=()
	for needle in "$DATA" "$EXEC"; do
		for p in $(pids_with "$needle"); do
			for q in $(tree_of "$p"); do victims+=("$q"); done
		done
	done
	((${#victims[@]})) || return 0
	log "killing leftover processes: ${victims[*]}"
	kill -KILL "${victims[@]}" 2>/dev/null || true
	for p in "${victims[@]}"; do
		for ((q = 0; q < 25; q++)); do
			pid_alive "$p" || break
			sleep 0.2
		done
	done
}
# unmount_under DIR: leftover overlay, shm and netns mounts of a dockerd that died.
unmount_under() {
	local dir=$1 mp
	[[ -d $dir ]] || return 0
	awk -v d="$dir" '{ mp = $5; gsub(/\\040/, " ", mp);
		if (mp == d || index(mp, d "/") == 1) print mp }' /proc/self/mountinfo |
		sort -r | while IFS= read -r mp; do
		umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "could not unmount $mp"
	done
}

# ---------------------------------------------------------------- packages

busybox_static() {
	local p
	for p in /bin/busybox /usr/bin/busybox; do
		# ldd fails on a static binary: that is the one that runs in an empty rootfs.
		if [[ -x $p ]] && ! ldd "$p" >/dev/null 2>&1; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

ensure_packages() {
	local need=()
	command -v dockerd >/dev/null && command -v docker >/dev/null || need+=(docker.io)
	command -v docker-registry >/dev/null || need+=(docker-registry)
	busybox_static >/dev/null || need+=(busybox-static)
	# The firewall tests load rules inside network namespaces (tests/integration/netnskit.py).
	command -v iptables-restore >/dev/null || need+=(iptables)
	command -v ip >/dev/null || need+=(iproute2)
	((${#need[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "missing ${need[*]} and not root: install them with apt-get"
	log "installing ${need[*]} (apt-get)"
	# Do not let the packages start the system dockerd or registry: we run private ones.
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
	fi
	local rc=0
	{ apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; } \
		</dev/null >&2 || rc=$?
	((made_policy)) && rm -f "$policy"
	((rc == 0)) || die "apt-get install ${need[*]} failed (exit $rc)"
}

# ---------------------------------------------------------------- dockerd

dockerd_pid() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null || true)
	if pid_alive "$pid" && [[ $(cmdline_of "$pid") == *"$DATA"* ]]; then echo "$pid"; fi
	return 0
}

# iptables_works: the default (bridge + NAT rules) needs a usable iptables.
iptables_works() {
	command -v iptables >/dev/null &&
		iptables -t nat -n -L >/dev/null 2>&1 && iptables -t filter -n -L >/dev/null 2>&1
}

# any_dockerd: some dockerd (ours or not) runs on this machine.
any_dockerd() {
	local c
	for c in /proc/[0-9]*/comm; do
		[[ $(cat "$c" 2>/dev/null) == dockerd ]] && return 0
	done
	return 1
}

# setup_main_bridge: the main engine's default bridge, with a subnet that no route on this
# machine overlaps and that lies outside Docker's default pools (172.17-31.x, 192.168.x).
setup_main_bridge() {
	command -v ip >/dev/null || die "the ip command (iproute2) is needed"
	ip link show "$MAIN_BRIDGE" >/dev/null 2>&1 || ip link add name "$MAIN_BRIDGE" type bridge
	if [[ -z $(ip -4 -o addr show dev "$MAIN_BRIDGE") ]]; then
		local cidr
		cidr=$(ip -4 -o route show | python3 -c '
import ipaddress, sys
routes = [ipaddress.ip_network(l.split()[0]) for l in sys.stdin if l.split()[0] != "default"]
for cidr in ("172.16.0.1/16", "10.199.0.1/16", "10.198.0.1/16"):
    net = ipaddress.ip_interface(cidr).network
    if not any(net.overlaps(r) for r in routes):
        print(cidr)
        break
') || true
		[[ -n $cidr ]] || die "no free subnet for $MAIN_BRIDGE"
		ip addr add "$cidr" dev "$MAIN_BRIDGE"
		log "bridge $MAIN_BRIDGE: $cidr"
	fi
	ip link set "$MAIN_BRIDGE" up
}

# sec_pool: this second engine's address pool, chosen once (the first 10.<200+k>.0.0/16 that
# no other engine of the checkout has) and kept in .state/docker-<name>/pool.
sec_pool() {
	if [[ ! -s $POOLFILE ]]; then
		mkdir -p "$DDIR"
		local k pool
		for ((k = 0; k < 50; k++)); do
			pool="10.$((200 + k)).0.0/16"
			if ! cat "$STATE"/docker-*/pool 2>/dev/null | grep -qxF "$pool"; then
				echo "$pool" >"$POOLFILE"
				break
			fi
		done
		[[ -s $POOLFILE ]] || die "no free address pool for engine $ENGINE_NAME"
	fi
	cat "$POOLFILE"
}

# secondary_forward_rule -I|-D: when the main engine keeps FORWARD at DROP (which with
# br_netfilter also filters bridged traffic), let the second engine's containers talk to each
# other: add (once) or remove an ACCEPT rule in DOCKER-USER.
secondary_forward_rule() {
	command -v iptables >/dev/null && iptables -n -L DOCKER-USER >/dev/null 2>&1 || return 0
	local pool
	pool=$(sec_pool)
	local rule=(DOCKER-USER -s "$pool" -d "$pool" -j ACCEPT)
	if iptables -C "${rule[@]}" 2>/dev/null; then
		[[ $1 == -D ]] && iptables -D "${rule[@]}"
	elif [[ $1 == -I ]]; then
		iptables -I "${rule[@]}"
	fi
	return 0
}

# foreign_main: a main engine of another checkout (it would share our bridge and iptables).
foreign_main() {
	local c p cmd
	for c in /proc/[0-9]*/comm; do
		[[ $(cat "$c" 2>/dev/null) == dockerd ]] || continue
		p=${c#/proc/}
		p=${p%/comm}
		cmd=$(cmdline_of "$p")
		if [[ $cmd == *"--bridge=$MAIN_BRIDGE"* && $cmd != *"$DATA"* ]] && pid_alive "$p"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# clean_stale: our socket does not answer; clear what a dead (or hung) dockerd left.
clean_stale() {
	local pid
	pid=$(dockerd_pid)
	if [[ -n $pid ]]; then
		log "dockerd $pid does not answer: stopping it"
		stop_pid "$pid" 20
	fi
	kill_leftovers
	rm -f "$SOCK" "$PIDFILE" "$EXEC/containerd/containerd.pid"
	unmount_under "$EXEC"
	unmount_under "$DATA"
	# Bridges of a dead dockerd keep their subnets' routes; with no dockerd at all on the
	# machine none of them is in use, and a new network could otherwise get a clashing route.
	# Docker's bridges are br-<id>, or carry Docker's MAC prefix 02:42 (docker0, supervisor0).
	if [[ $ENGINE_NAME == main ]] && ! any_dockerd && command -v ip >/dev/null; then
		local br
		for br in $(ip -o link show type bridge |
			awk -F': ' '$2 ~ /^br-/ || $3 ~ /link\/ether 02:42:/ {print $2}'); do
			[[ $br == "$MAIN_BRIDGE" ]] && continue
			if ip link delete "$br" 2>/dev/null; then log "removed stale bridge $br"; fi
		done
	fi
}

# start_dockerd MODE: MODE is iptables | no-iptables | isolated (second engine).
start_dockerd() {
	local mode=$1
	mkdir -p "$DATA" "$EXEC" "$(dirname "$SOCK")"
	# Our own config so /etc/docker/daemon.json never changes our engine. The engine ID comes
	# from the key file: the default /etc/docker/key.json would give every engine the same ID.
	printf '{"deprecated-key-path": "%s"}\n' "$DDIR/key.json" >"$CONF"
	local args=(--data-root "$DATA" --exec-root "$EXEC" --pidfile "$PIDFILE"
		--host "unix://$SOCK" --config-file "$CONF" --log-level "${DOCKERD_LOG_LEVEL:-info}")
	case $mode in
	iptables)
		setup_main_bridge
		args+=(--bridge="$MAIN_BRIDGE")
		;;
	no-iptables)
		setup_main_bridge
		args+=(--bridge="$MAIN_BRIDGE" --iptables=false --ip-masq=false)
		;;
	# The second engine shares the host's network stack with the main one: no default bridge,
	# no rules, and its own pool so the two never hand out the same subnet.
	isolated)
		secondary_forward_rule -I
		args+=(--bridge=none --iptables=false --ip-masq=false
			--default-address-pool "base=$(sec_pool),size=24")
		;;
	esac
	# A long log from many starts is of no use: keep the last part.
	if [[ -f $LOG ]] && (($(stat -c %s "$LOG") > 5000000)); then
		tail -c 1000000 "$LOG" >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"
	fi
	printf '=== %s engine.sh start (%s): dockerd %s\n' "$(date -Is)" "$mode" "${args[*]}" >>"$LOG"
	log "starting dockerd ($mode), log in $LOG"
	# setsid: the engine outlives make, Ctrl-C and the calling shell.
	# 9>&-: the daemon must not inherit (and so hold) our lock.
	setsid dockerd "${args[@]}" </dev/null >>"$LOG" 2>&1 9>&- &
	local child=$! i
	for ((i = 0; i < 120; i++)); do
		if engine_answers "unix://$SOCK"; then
			echo "$mode" >"$MODEFILE"
			log "dockerd answers (pid $(cat "$PIDFILE" 2>/dev/null || echo "$child"))"
			return 0
		fi
		if ! pid_alive "$child" && [[ -z $(dockerd_pid) ]]; then
			log "dockerd exited while starting"
			break
		fi
		sleep 0.5
	done
	log "dockerd did not answer within 60 s; last lines of $LOG:"
	tail -n 40 "$LOG" >&2 || true
	# Leave nothing half-started behind.
	clean_stale
	return 1
}

# probe_bridge HOST: a user-defined bridge network can be made (the supervisor makes one per
# app). probe_host_run HOST: a host-network container runs (tests reach the API on 127.0.0.1).
probe_bridge() {
	local name="balena-py-probe-$$"
	docker -H "$1" network create --driver bridge "$name" >/dev/null 2>&1 || return 1
	docker -H "$1" network rm "$name" >/dev/null 2>&1 || true
}
probe_host_run() {
	local out
	out=$(docker -H "$1" run --rm --network host "$BASE_REF" sh -c 'echo probe-ok' 2>&1) || true
	[[ $out == *probe-ok* ]] && return 0
	log "host-network run failed: $out"
	return 1
}

# ensure_dockerd: prints the DOCKER_HOST to use; starts our engine when needed.
ensure_dockerd() {
	local host="unix://$SOCK"
	if engine_answers "$host"; then
		echo "$host"
		return 0
	fi
	ensure_packages
	local other
	if [[ $ENGINE_NAME == main ]] && other=$(foreign_main); then
		die "the main engine of another checkout runs (pid $other: $(cmdline_of "$other" | cut -c1-120)); \
one per machine: point DOCKER_HOST at its socket, or stop it with its engine.sh down"
	fi
	clean_stale
	local modes
	if [[ $ENGINE_NAME != main ]]; then
		modes=(isolated)
	elif iptables_works; then
		modes=(iptables no-iptables)
	else
		log "iptables is not usable here: bridge networks without NAT rules"
		modes=(no-iptables)
	fi
	local mode
	for mode in "${modes[@]}"; do
		if start_dockerd "$mode"; then
			if probe_bridge "$host"; then
				echo "$host"
				return 0
			fi
			log "dockerd ($mode) cannot create a bridge network"
			stop_engine
		fi
	done
	die "no working dockerd (tried: ${modes[*]}); see $LOG"
}

stop_engine() {
	local pid
	pid=$(dockerd_pid)
	if [[ -n $pid ]]; then
		log "stopping dockerd $pid"
		# dockerd stops its containers first (15 s each at most, in parallel).
		stop_pid "$pid" 45
	fi
	kill_leftovers
	rm -f "$SOCK" "$PIDFILE" "$EXEC/containerd/containerd.pid"
	unmount_under "$EXEC"
	unmount_under "$DATA"
	if [[ $ENGINE_NAME != main ]]; then
		secondary_forward_rule -D
	elif command -v ip >/dev/null && ip link show "$MAIN_BRIDGE" >/dev/null 2>&1 && ! foreign_main >/dev/null; then
		ip link delete "$MAIN_BRIDGE" || true
	fi
}

# ---------------------------------------------------------------- registry

registry_pid() {
	local pid
	pid=$(cat "$REG_PIDFILE" 2>/dev/null || true)
	if pid_alive "$pid" && [[ $(cmdline_of "$pid") == *"$REG_CONF"* ]]; then echo "$pid"; fi
	return 0
}

ensure_registry() {
	if registry_answers; then return 0; fi
	local pid
	pid=$(registry_pid)
	[[ -n $pid ]] && stop_pid "$pid" 5
	rm -f "$REG_PIDFILE"
	command -v docker-registry >/dev/null || ensure_packages
	mkdir -p "$REG_DIR/data"
	cat >"$REG_CONF" <<EOF
# Generated by scripts/engine.sh: the local registry of tests and development.
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: $REG_ADDR
  secret: balena-py-local-registry
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
EOF
	log "starting registry on $REG_ADDR, log in $REG_LOG"
	setsid docker-registry serve "$REG_CONF" </dev/null >>"$REG_LOG" 2>&1 9>&- &
	echo $! >"$REG_PIDFILE"
	local i
	for ((i = 0; i < 40; i++)); do
		if registry_answers; then return 0; fi
		pid_alive "$(cat "$REG_PIDFILE")" || break
		sleep 0.5
	done
	tail -n 20 "$REG_LOG" >&2 || true
	die "the registry does not answer at http://$REG_ADDR/v2/"
}

stop_registry() {
	local pid p
	pid=$(registry_pid)
	if [[ -n $pid ]]; then
		log "stopping registry $pid"
		stop_pid "$pid" 10
	fi
	for p in $(pids_with "$REG_CONF"); do stop_pid "$p" 5; done
	rm -f "$REG_PIDFILE"
}

# ---------------------------------------------------------------- images

# The recipes: a change to any of them (or to busybox) gives a new hash, hence a rebuild.
DEMO_APP="$REPO/scripts/demo-app.sh"
demo_dockerfile() {
	cat <<EOF
FROM $BASE_REF
COPY demo.sh /usr/local/bin/demo
ENV PORT=8080
EXPOSE 8080
LABEL io.balena-py.recipe="$1"
CMD ["/usr/local/bin/demo"]
EOF
}
ROOTFS_RECIPE=v1
base_hash() { { sha256sum "$(busybox_static)" | cut -d' ' -f1; echo "$ROOTFS_RECIPE"; } | sha256sum | cut -c1-16; }
demo_hash() { { base_hash; cat "$DEMO_APP"; demo_dockerfile x; } | sha256sum | cut -c1-16; }

image_recipe() {
	docker -H "$1" image inspect -f '{{index .Config.Labels "io.balena-py.recipe"}}' "$2" 2>/dev/null || true
}

build_base() {
	local host=$1 hash=$2 bb tmp p
	bb=$(busybox_static) || die "no static busybox"
	tmp=$(mktemp -d "$STATE/rootfs.XXXXXX")
	mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,tmp,var/log,www,proc,sys,dev,home}
	chmod 1777 "$tmp/tmp"
	cp "$bb" "$tmp/bin/busybox"
	while IFS= read -r p; do
		[[ $p == bin/busybox ]] && continue
		mkdir -p "$tmp/${p%/*}"
		ln -sf /bin/busybox "$tmp/$p"
	done < <("$bb" --list-full)
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
	log "importing $BASE_REF from $bb"
	tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$tmp" -cf - . |
		docker -H "$host" import \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'CMD ["/bin/sh"]' \
			--change "LABEL io.balena-py.recipe=$hash" - "$BASE_REF" >/dev/null
	rm -rf "$tmp"
}

build_demo() {
	local host=$1 hash=$2 tmp
	tmp=$(mktemp -d "$STATE/demo.XXXXXX")
	cp "$DEMO_APP" "$tmp/demo.sh"
	chmod 0755 "$tmp/demo.sh"
	demo_dockerfile "$hash" >"$tmp/Dockerfile"
	log "building $DEMO_REF"
	docker -H "$host" build -q -t "$DEMO_REF" "$tmp" >/dev/null 2>"$tmp/err" || {
		cat "$tmp/err" >&2
		rm -rf "$tmp"
		die "building the demo image failed"
	}
	rm -rf "$tmp"
}

# ensure_image HOST REPO HASH BUILDER: the engine holds REF built from the current recipe,
# and the registry holds the same manifest.
ensure_image() {
	local host=$1 repo=$2 hash=$3 builder=$4 ref="$REG_ADDR/$2:latest"
	if [[ $(image_recipe "$host" "$ref") != "$hash" ]] && [[ -n $(registry_digest "$repo" latest) ]]; then
		# Another engine (or an earlier data root) pushed it: take that one if it is current.
		docker -H "$host" pull -q "$ref" >/dev/null 2>&1 || true
	fi
	if [[ $(image_recipe "$host" "$ref") != "$hash" ]]; then
		"$builder" "$host" "$hash"
	fi
	local want
	want=$(registry_digest "$repo" latest)
	if [[ -z $want ]] || ! docker -H "$host" image inspect -f '{{join .RepoDigests " "}}' "$ref" |
		grep -qF "$REG_ADDR/$repo@$want"; then
		log "pushing $ref"
		docker -H "$host" push "$ref" >/dev/null || die "pushing $ref to $REG_ADDR failed"
		[[ -n $(registry_digest "$repo" latest) ]] || die "$ref is not in the registry after push"
	fi
	docker -H "$host" tag "$ref" "$repo:latest"
}

ensure_images() {
	local host=$1 bh
	mkdir -p "$STATE"
	bh=$(base_hash)
	ensure_image "$host" "$BASE_REPO" "$bh" build_base
	ensure_image "$host" "$DEMO_REPO" "$(demo_hash)" build_demo
}

# ---------------------------------------------------------------- commands

# host_value: the DOCKER_HOST this engine is (or would be) reached at.
host_value() {
	if [[ $ENGINE_NAME == main && -n ${DOCKER_HOST:-} ]] && engine_answers "$DOCKER_HOST"; then
		echo "$DOCKER_HOST"
	else
		echo "unix://$SOCK"
	fi
}

lock() {
	mkdir -p "$STATE"
	exec 9>"$STATE/.engine-$ENGINE_NAME.lock"
	flock -w 600 9 || die "another engine.sh holds $STATE/.engine-$ENGINE_NAME.lock"
}

cmd_up() {
	lock
	command -v python3 >/dev/null || die "python3 is needed"
	local host
	if [[ $ENGINE_NAME == main && -n ${DOCKER_HOST:-} ]] && engine_answers "$DOCKER_HOST"; then
		host=$DOCKER_HOST
		log "using the engine at DOCKER_HOST=$host"
	else
		host=$(ensure_dockerd)
	fi
	if [[ $ENGINE_NAME == main ]]; then
		ensure_registry
		ensure_images "$host"
	else
		# Again on every call: a main engine started after this one made a new DOCKER-USER.
		secondary_forward_rule -I
		if registry_answers; then
			# No registry of its own: it gets the base image from the main one.
			docker -H "$host" pull -q "$BASE_REF" >/dev/null || die "cannot pull $BASE_REF"
			docker -H "$host" tag "$BASE_REF" "$BASE_REPO:latest"
		else
			log "warning: no registry at $REG_ADDR (run 'scripts/engine.sh up' for the main engine)"
		fi
	fi
	# A fresh engine is checked for what the supervisor and the tests need.
	if [[ ! -f "$DDIR/verified" || "$DDIR/verified" -ot "$PIDFILE" ]] && [[ $host == "unix://$SOCK" ]]; then
		if docker -H "$host" image inspect "$BASE_REF" >/dev/null 2>&1; then
			probe_host_run "$host" || die "a host-network container does not run on $host"
		fi
		probe_bridge "$host" || die "cannot create a bridge network on $host"
		touch "$DDIR/verified"
		log "verified: bridge networks and host-network containers work"
	fi
	echo "DOCKER_HOST=$host"
}

cmd_down() {
	lock
	local name
	if [[ $ENGINE_NAME == main ]]; then
		# Stopping main stops the registry and every other engine of this checkout too.
		for name in "$STATE"/docker-*; do
			[[ -d $name ]] || continue
			ENGINE_NAME=${name##*/docker-} bash "${BASH_SOURCE[0]}" down
		done
		stop_registry
	fi
	stop_engine
	log "down"
}

cmd_status() {
	local host pid rc=0
	host=$(host_value)
	pid=$(dockerd_pid)
	if engine_answers "$host"; then
		echo "engine $ENGINE_NAME: answers at $host (server $(docker -H "$host" version --format '{{.Server.Version}}'))"
		[[ -n $pid ]] && echo "  private dockerd pid $pid, mode $(cat "$MODEFILE" 2>/dev/null || echo '?'), data $DATA"
		echo "  containers: $(docker -H "$host" ps -q | wc -l) running, $(docker -H "$host" ps -aq | wc -l) in all"
	else
		echo "engine $ENGINE_NAME: not running (would be at $host)"
		rc=1
	fi
	if registry_answers; then
		pid=$(registry_pid)
		echo "registry: answers at http://$REG_ADDR/v2/${pid:+ (ours, pid $pid)}"
		echo "  $BASE_REF: $(registry_digest "$BASE_REPO" latest || true)"
		echo "  $DEMO_REF: $(registry_digest "$DEMO_REPO" latest || true)"
	else
		echo "registry: nothing answers at http://$REG_ADDR/v2/"
		rc=1
	fi
	if [[ $ENGINE_NAME == main ]]; then
		local d
		for d in "$STATE"/docker-*; do
			[[ -d $d ]] || continue
			ENGINE_NAME=${d##*/docker-} bash "${BASH_SOURCE[0]}" status 2>/dev/null | grep -v -e "^registry" -e "^  127" | sed 's/^/  /' || true
		done
	fi
	return $rc
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
host) host_value ;;
status) cmd_status ;;
*)
	echo "usage: [ENGINE_NAME=name] $0 up|down|host|status" >&2
	exit 2
	;;
esac
