#!/usr/bin/env bash
# build.sh: the device image, build/image/qemux86-64.img, from Debian packages and this
# working tree (docs/device-image.md). Run by `make image`; root on Debian 12.
#
# Stages (each timed on stderr):
#   1. rootfs   debootstrap Debian 12 with image/packages.txt, cached as
#               build/image/cache/rootfs-<hash>.tar.zst (the slow part: minutes, done once)
#   2. project  a wheel of the working tree, installed with image/requirements.txt's pinned
#               dependencies into a venv in the rootfs (/opt/balena-supervisor); the wheels of
#               the dependencies are cached per requirements.txt
#   3. preload  the app's images saved from the development engine (DOCKER_HOST, started by
#               `make image`), loaded by a throw-away dockerd into a Docker data root that the
#               image's engine uses as is; cached per image id
#   4. disk     ext4 and vfat filesystems made from directories (mkfs.ext4 -d, mkfs.vfat +
#               mcopy), placed with sfdisk and dd, GRUB written for BIOS (boot.img + core.img
#               in the MBR gap) and UEFI (EFI/BOOT/BOOTX64.EFI): no loop device, no mount.
#
# Nothing but Debian's archive (debootstrap, host packages) and PyPI (wheels) is reached.
# A second run with unchanged inputs only prints the image path.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
IMG_SRC="$REPO/image"
BOARD=qemux86-64
OUT_DIR="$REPO/build/image"
CACHE="$OUT_DIR/cache"
WORK="$OUT_DIR/work"
IMAGE="$OUT_DIR/$BOARD.img"
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# Bump when the way the rootfs is made changes (not its package list: that is hashed).
ROOTFS_RECIPE=1
# Partition sizes in MiB; the root partition is sized from its content.
BOOT_MB=${IMAGE_BOOT_MB:-64}
STATE_MB=${IMAGE_STATE_MB:-64}
DATA_MB=${IMAGE_DATA_MB:-2048}
# What the app in image/preload/apps.json runs; saved from DOCKER_HOST at build time.
PRELOAD_IMAGES=(127.0.0.1:5000/balena-py/demo:latest 127.0.0.1:5000/balena-py/busybox:latest)

log() { printf 'image: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
T0=$SECONDS
# quiet CMD...: run with output to build/image/last-command.log, shown only on failure.
quiet() {
	local logf="$OUT_DIR/last-command.log"
	mkdir -p "$OUT_DIR"
	if ! "$@" </dev/null >"$logf" 2>&1; then
		tail -n 40 "$logf" >&2
		die "failed: $*"
	fi
}
stage() { log "[$((SECONDS - T0))s] $*"; }

# ------------------------------------------------------------------ host tools

# command -> Debian package; missing ones are installed (a fresh Debian 12 needs them all).
# QEMU and OVMF are not needed to build, only to boot it (vm.py), but make qemu-test builds first.
host_tools() {
	local -A pkg=(
		[debootstrap]=debootstrap [mcopy]=mtools [mkfs.vfat]=dosfstools [sfdisk]=fdisk
		[mkfs.ext4]=e2fsprogs [grub-mkimage]=grub-common [zstd]=zstd [dockerd]=docker.io
		[unshare]=util-linux [qemu-system-x86_64]=qemu-system-x86
	)
	local missing=() c
	for c in "${!pkg[@]}"; do command -v "$c" >/dev/null || missing+=("${pkg[$c]}"); done
	[[ -d /usr/lib/grub/i386-pc ]] || missing+=(grub-pc-bin)
	[[ -d /usr/lib/grub/x86_64-efi ]] || missing+=(grub-efi-amd64-bin)
	# what image/vm.py boots it with (make qemu-up, make qemu-test): QEMU and its UEFI firmware
	[[ -f /usr/share/OVMF/OVMF_CODE.fd ]] || missing+=(ovmf)
	if ((${#missing[@]})); then
		log "installing host packages: ${missing[*]}"
		apt-get update -q </dev/null >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			"${missing[@]}" </dev/null >&2
	fi
	[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot and the preload dockerd need it)"
}

# ------------------------------------------------------------------ 1. rootfs

packages() { grep -v -e '^#' -e '^[[:space:]]*$' "$IMG_SRC/packages.txt" | tr -d ' ' | sort -u; }
rootfs_key() {
	{ packages; echo "$SUITE $MIRROR $ROOTFS_RECIPE"; } | sha256sum | cut -c1-16
}

build_rootfs() {
	local tarball=$1 tmp
	tmp="$CACHE/rootfs-tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "debootstrap $SUITE from $MIRROR (minutes, once per package list)"
	debootstrap --variant=minbase --components=main \
		--include="$(packages | paste -sd, -)" "$SUITE" "$tmp" "$MIRROR" >&2 ||
		die "debootstrap failed (see $tmp/debootstrap/debootstrap.log)"
	# Only what the packages gave: configuration happens per build, on a copy.
	chroot "$tmp" apt-get clean
	rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/log/*.log
	tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$tmp" -cf - . |
		zstd -q -T0 -3 -o "$tarball.tmp"
	mv "$tarball.tmp" "$tarball"
	rm -rf "$tmp"
}

# ------------------------------------------------------------------ 2. project

# The wheels of requirements.txt, downloaded (or built) once per file content.
wheelhouse() {
	local key dir
	key=$(sha256sum "$IMG_SRC/requirements.txt" | cut -c1-16)
	dir="$CACHE/wheels-$key"
	if [[ ! -f $dir/.complete ]]; then
		rm -rf "$dir"
		log "fetching the pinned dependencies' wheels (image/requirements.txt)"
		quiet "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps \
			-r "$IMG_SRC/requirements.txt" -w "$dir"
		touch "$dir/.complete"
	fi
	echo "$dir"
}

project_wheel() {
	local dir=$1
	rm -rf "$dir"
	mkdir -p "$dir"
	quiet "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps "$REPO" -w "$dir"
	local whl=("$dir"/*.whl)
	[[ -f ${whl[0]} ]] || die "no wheel built from $REPO"
	echo "${whl[0]}"
}

# requirements.txt: the exact closure pip resolves today for the project's dependencies.
write_lock() {
	local report
	report=$(mktemp)
	"$PYTHON" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
		--report "$report" "$REPO" </dev/null >&2
	{
		echo "# Runtime dependencies of the image's venv, pinned (the whole closure of pyproject.toml's"
		echo "# [project] dependencies). Regenerate after a dependency change with: make image-lock"
		"$PYTHON" - "$report" <<'PY'
import json, sys
for item in sorted(json.load(open(sys.argv[1]))["install"],
                   key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    if meta["name"] != "balena-supervisor-py":
        print(f"{meta['name']}=={meta['version']}")
PY
	} >"$IMG_SRC/requirements.txt"
	rm -f "$report"
	log "wrote $IMG_SRC/requirements.txt"
}

# install_project ROOTFS: /opt/balena-supervisor is a venv of the image's own python3.
install_project() {
	local root=$1 wheels whl
	wheels=$(wheelhouse)
	whl=$(project_wheel "$WORK/project")
	rm -rf "$root/tmp/wheels"
	mkdir -p "$root/tmp/wheels"
	cp "$wheels"/*.whl "$whl" "$IMG_SRC/requirements.txt" "$root/tmp/wheels/"
	# A clean environment: the build host's PIP_* settings (indexes, constraints) stay out.
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		chroot "$root" /bin/sh -euc '
			python3 -m venv /opt/balena-supervisor
			/opt/balena-supervisor/bin/pip install -q --no-index --find-links /tmp/wheels \
				--disable-pip-version-check --no-cache-dir \
				-r /tmp/wheels/requirements.txt "/tmp/wheels/$1"
			/opt/balena-supervisor/bin/pip check' sh "$(basename "$whl")" >&2 ||
		die "installing the project into the image failed (is image/requirements.txt in step with pyproject.toml?)"
	rm -rf "$root/tmp/wheels"
	mkdir -p "$root/usr/share/balena-supervisor"
	cp -r "$REPO/board-configs" "$root/usr/share/balena-supervisor/"
}

# ------------------------------------------------------------------ 3. preload

image_ids() {
	local ref
	for ref in "${PRELOAD_IMAGES[@]}"; do
		docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || die "no image $ref at DOCKER_HOST=${DOCKER_HOST:-}"
	done
}

# docker_root TARBALL: a Docker data root (overlay2) holding PRELOAD_IMAGES, made by a
# dockerd of our own in private mount and network namespaces (it touches no host bridge,
# iptables rule or mount), then stripped to the image store.
build_docker_root() {
	local tarball=$1 tmp run
	tmp="$CACHE/docker-tmp"
	run=/run/bpy-image-$$
	rm -rf "$tmp" "$run"
	mkdir -p "$tmp/root" "$run"
	log "saving ${PRELOAD_IMAGES[*]} from DOCKER_HOST"
	docker save -o "$tmp/images.tar" "${PRELOAD_IMAGES[@]}"
	printf '{"storage-driver": "overlay2"}\n' >"$tmp/daemon.json"
	log "loading them into the image's Docker data root"
	unshare --mount --net --fork --propagation private /bin/bash -euc '
		tmp=$1 run=$2
		dockerd --data-root "$tmp/root" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
			--host "unix://$run/docker.sock" --config-file "$tmp/daemon.json" \
			--bridge=none --iptables=false --ip6tables=false --ip-masq=false \
			>"$tmp/dockerd.log" 2>&1 &
		pid=$!
		for _ in $(seq 120); do
			docker -H "unix://$run/docker.sock" version >/dev/null 2>&1 && break
			kill -0 "$pid" 2>/dev/null || { cat "$tmp/dockerd.log" >&2; exit 1; }
			sleep 0.5
		done
		docker -H "unix://$run/docker.sock" load -q -i "$tmp/images.tar" >&2
		kill -TERM "$pid"
		wait "$pid" || true' sh "$tmp" "$run" || die "the preload dockerd failed (log: $tmp/dockerd.log)"
	rm -rf "$run"
	# The image's engine makes its own networks, containers and identity on first start.
	(cd "$tmp/root" && rm -rf network containers tmp runtimes buildkit trust swarm plugins containerd engine-id)
	tar --numeric-owner --xattrs --xattrs-include='*' -C "$tmp/root" -cf - . |
		zstd -q -T0 -3 -o "$tarball.tmp"
	mv "$tarball.tmp" "$tarball"
	rm -rf "$tmp"
}

# ------------------------------------------------------------------ 4. disk

# The app's target for --local-target, made from apps.json (TEMPORARY until the supervisor
# reads apps.json itself: see image/rootfs/usr/lib/balena-image/preload-shim).
local_target_from_apps_json() {
	python3 - "$1" <<'PY'
import json, sys
apps_json = json.load(open(sys.argv[1]))
apps = {}
for app in apps_json["apps"].values():
    (commit, release), = app["releases"].items()
    services = {}
    for name, svc in release["services"].items():
        services[str(svc["id"])] = {
            "serviceName": name, "imageId": svc["image_id"], "image": svc["image"],
            "environment": svc.get("environment", {}), "labels": svc.get("labels", {}),
            "running": svc.get("running", True), **svc.get("composition", {}),
        }
    apps[str(app["id"])] = {
        "name": app["name"], "commit": commit, "releaseId": release["id"],
        "services": services, "volumes": release.get("volumes", {}),
        "networks": release.get("networks", {}),
    }
json.dump({"local": {"config": apps_json.get("config", {}), "apps": apps}}, sys.stdout, indent=2)
PY
}

configure_rootfs() {
	local root=$1
	cp -r --no-preserve=ownership "$IMG_SRC/rootfs/." "$root/"
	chmod 0755 "$root"/usr/lib/balena-image/*
	echo balena >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tbalena\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	# Each device makes its own identity at first boot.
	: >"$root/etc/machine-id"
	rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
	# No root password (locked): production images have no login. The development shell is
	# config.json `developmentMode` (balena-dev-shell.service).
	sed -i 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"
	# /tmp is a tmpfs, as on balenaOS: update locks and breadcrumbs in it die with a reboot.
	cp "$root/usr/share/systemd/tmp.mount" "$root/etc/systemd/system/tmp.mount"
	mkdir -p "$root/mnt/boot" "$root/mnt/state" "$root/mnt/data" "$root/var/log/journal"
	systemctl --root="$root" enable systemd-networkd.service tmp.mount \
		balena-supervisor.service balena-dev-shell.service balena-expand-data.service >/dev/null 2>&1
	systemctl --root="$root" enable docker.service >/dev/null 2>&1 || true
	systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1
	local_target_from_apps_json "$IMG_SRC/preload/apps.json" \
		>"$root/usr/lib/balena-image/preload-local-target.json"
	{
		echo "supervisor=$(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "rootfs=$(rootfs_key)"
	} >"$root/etc/balena-image-release"
}

# The OS the device reports: /v1/device os_version is os-release's PRETTY_NAME. No VARIANT_ID:
# as on balenaOS's unified images, config.json developmentMode decides dev or prod.
write_os_release() {
	local root=$1 debian rev
	debian=$(cat "$root/etc/debian_version")
	rev=$(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)
	rm -f "$root/etc/os-release" "$root/usr/lib/os-release"
	cat >"$root/usr/lib/os-release" <<EOF
PRETTY_NAME="balena-py OS $rev (Debian $debian)"
NAME="balena-py OS"
ID=balena-py-os
ID_LIKE=debian
VERSION="$rev"
VERSION_ID="$debian"
HOME_URL="https://www.debian.org/"
SLUG="$BOARD"
MACHINE="$BOARD"
EOF
	ln -s ../usr/lib/os-release "$root/etc/os-release"
}


build_disk() {
	local root=$1 data=$2 boot=$3
	local uuid_root uuid_state uuid_data vol_boot disk_id
	uuid_root=$(cat /proc/sys/kernel/random/uuid)
	uuid_state=$(cat /proc/sys/kernel/random/uuid)
	uuid_data=$(cat /proc/sys/kernel/random/uuid)
	vol_boot=$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
	disk_id=$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
	local boot_uuid="${vol_boot:0:4}-${vol_boot:4:4}"
	boot_uuid=${boot_uuid^^}

	# The partitions are found by these ids (a second balena disk on the machine has the same
	# labels); the labels are balenaOS's.
	cat >"$root/etc/fstab" <<EOF
# balenaOS layout: resin-boot, resin-rootA, resin-state, resin-data (docs/device-image.md)
UUID=$uuid_root   /           ext4  defaults,errors=remount-ro  0  1
UUID=$boot_uuid   /mnt/boot   vfat  defaults,umask=0077         0  2
UUID=$uuid_state  /mnt/state  ext4  defaults                    0  2
UUID=$uuid_data   /mnt/data   ext4  defaults                    0  2
EOF
	# apparmor=0: Docker would want Debian's apparmor package (profiles, a boot service) for
	# its docker-default profile; balenaOS runs its engine without AppArmor too.
	local cmdline="root=UUID=$uuid_root ro console=tty0 console=ttyS0,115200n8 apparmor=0"
	install_efi_grub "$boot" "$boot_uuid"
	sed "s|@CMDLINE@|$cmdline|; s|@ROOT_UUID@|$uuid_root|" "$IMG_SRC/boot/grub.cfg" >"$boot/grub/grub.cfg"

	local root_mb
	root_mb=$(du -sm --apparent-size "$root" | cut -f1)
	root_mb=$((root_mb + root_mb / 4 + 256))
	log "filesystems: resin-boot ${BOOT_MB} MiB, resin-rootA ${root_mb} MiB, resin-state ${STATE_MB} MiB, resin-data ${DATA_MB} MiB"

	# MBR: four primary partitions. The first, resin-boot, is an EFI system partition
	# (type ef) and active, so both UEFI firmware and BIOS boot it; GRUB's core.img lives
	# in the gap before it (sectors 1-2047).
	local s1=2048 n1 n2 n3 n4
	n1=$((BOOT_MB * 2048))
	n2=$((root_mb * 2048))
	n3=$((STATE_MB * 2048))
	n4=$((DATA_MB * 2048))
	local s2=$((s1 + n1)) s3 s4 total
	s3=$((s2 + n2))
	s4=$((s3 + n3))
	total=$((s4 + n4))
	local tmpimg="$IMAGE.tmp"
	rm -f "$tmpimg"
	truncate -s $((total * 512)) "$tmpimg"
	sfdisk -q "$tmpimg" >/dev/null <<EOF
label: dos
label-id: 0x$disk_id
unit: sectors
start=$s1, size=$n1, type=ef, bootable
start=$s2, size=$n2, type=83
start=$s3, size=$n3, type=83
start=$s4, size=$n4, type=83
EOF
	# The ext4 filesystems are made in place (mke2fs's offset; nodiscard, so the rest of the
	# file is never punched); the small vfat one is made aside and copied in.
	mkfs.vfat -F 32 -n resin-boot -i "$vol_boot" -C "$WORK/boot.img" $((BOOT_MB * 1024)) >/dev/null 2>&1
	MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$WORK/boot.img" "$boot"/* ::/
	dd if="$WORK/boot.img" of="$tmpimg" bs=1M seek=$((s1 / 2048)) conv=notrunc,sparse status=none
	rm -f "$WORK/boot.img"
	mkfs_ext4_at "$tmpimg" "$s2" "$n2" resin-rootA "$uuid_root" "$root"
	mkfs_ext4_at "$tmpimg" "$s3" "$n3" resin-state "$uuid_state" "$WORK/state"
	mkfs_ext4_at "$tmpimg" "$s4" "$n4" resin-data "$uuid_data" "$data"
	install_bios_grub "$tmpimg" "$boot_uuid"
	mv "$tmpimg" "$IMAGE"
}

# mkfs_ext4_at DISK START_SECTOR SECTORS LABEL UUID DIR: an ext4 filesystem holding DIR.
mkfs_ext4_at() {
	local disk=$1 start=$2 sectors=$3 label=$4 uuid=$5 dir=$6
	mkfs.ext4 -q -F -L "$label" -U "$uuid" -E "offset=$((start * 512)),nodiscard" -d "$dir" \
		"$disk" "$((sectors / 2))k" || die "mkfs.ext4 $label failed"
}

GRUB_MODULES="part_msdos part_gpt fat ext2 search search_fs_uuid search_label normal configfile
linux echo test serial terminal boot all_video gzio"

# early.cfg: core images find resin-boot by its volume id, then read /grub/grub.cfg there.
early_cfg() {
	printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/grub\nconfigfile $prefix/grub.cfg\n' "$1"
}

# EFI/BOOT/BOOTX64.EFI (the removable-media path, which needs no NVRAM entry) and the
# modules, into the boot directory.
install_efi_grub() {
	local boot=$1 boot_uuid=$2
	early_cfg "$boot_uuid" >"$WORK/early.cfg"
	mkdir -p "$boot/EFI/BOOT" "$boot/grub/x86_64-efi" "$boot/grub/i386-pc"
	# shellcheck disable=SC2086
	grub-mkimage -O x86_64-efi -o "$boot/EFI/BOOT/BOOTX64.EFI" -p /grub -c "$WORK/early.cfg" \
		$GRUB_MODULES efi_gop efi_uga
	cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst "$boot/grub/x86_64-efi/"
	cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$boot/grub/i386-pc/"
}

# What grub-install does for a BIOS disk, without a block device: boot.img's code (the first
# 440 bytes; the disk id and partition table stay) in the MBR, core.img from sector 1 on.
# boot.img reads core.img from sector 1 and core.img's first sector the rest from sector 2:
# grub-mkimage's defaults, so nothing needs patching but the drive-check jump, which
# grub-bios-setup also replaces by two NOPs on a hard disk (BIOSes that pass a wrong drive).
install_bios_grub() {
	local disk=$1 boot_uuid=$2
	early_cfg "$boot_uuid" >"$WORK/early.cfg"
	# shellcheck disable=SC2086
	grub-mkimage -O i386-pc -o "$WORK/core.img" -p /grub -c "$WORK/early.cfg" biosdisk $GRUB_MODULES
	local sectors=$((($(stat -c %s "$WORK/core.img") + 511) / 512))
	((sectors < 2047)) || die "core.img is $sectors sectors: it does not fit before sector 2048"
	cp /usr/lib/grub/i386-pc/boot.img "$WORK/boot.img"
	printf '\x90\x90' | dd of="$WORK/boot.img" bs=1 seek=$((0x66)) conv=notrunc status=none
	dd if="$WORK/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
	dd if="$WORK/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
}

# prune_cache KEEP...: the cache holds what the current inputs use, nothing older.
prune_cache() {
	local entry name keep k
	for entry in "$CACHE"/*; do
		name=$(basename "$entry")
		keep=0
		for k in "$@"; do [[ $name == "$k" ]] && keep=1; done
		((keep)) || rm -rf "$entry"
	done
}

# ------------------------------------------------------------------ main

# Everything the image is made of; an unchanged hash means an unchanged image.
input_hash() {
	{
		rootfs_key
		(cd "$REPO" && git ls-files -co --exclude-standard -- image supervisor board-configs pyproject.toml |
			sort | xargs -d '\n' sha256sum 2>/dev/null)
		image_ids
		echo "$BOOT_MB $STATE_MB $DATA_MB"
	} | sha256sum | cut -c1-16
}

main() {
	# A private mount namespace: the rootfs overlay never outlives (or leaks from) the build.
	if [[ -z ${BPY_IMAGE_MOUNTNS:-} ]]; then
		BPY_IMAGE_MOUNTNS=1 exec unshare --mount --propagation private bash "${BASH_SOURCE[0]}" "$@"
	fi
	host_tools
	[[ -x $PYTHON ]] || die "$PYTHON is missing: run 'make install' (make image does)"
	mkdir -p "$CACHE"
	if [[ ${1:-} == lock ]]; then # rewrite requirements.txt from pyproject.toml's dependencies
		write_lock
		return 0
	fi
	if [[ ${1:-} == rootfs ]]; then # only the cached rootfs (debugging, CI warm-up)
		local t="$CACHE/rootfs-$(rootfs_key).tar.zst"
		[[ -f $t ]] || build_rootfs "$t"
		echo "$t"
		return 0
	fi
	local hash
	hash=$(input_hash)
	if [[ -f $IMAGE && $(cat "$IMAGE.inputs" 2>/dev/null) == "$hash" ]]; then
		log "up to date: $IMAGE"
		echo "$IMAGE"
		return 0
	fi

	stage "rootfs"
	local key tarball
	key=$(rootfs_key)
	tarball="$CACHE/rootfs-$key.tar.zst"
	[[ -f $tarball ]] || build_rootfs "$tarball"
	# The rootfs is extracted once (per package list) and used read-only as the lower layer of
	# an overlay: a build writes only its own changes (the venv, the configuration).
	local base="$CACHE/rootfs-$key"
	if [[ ! -f $base.extracted ]]; then
		rm -rf "$base" "$CACHE"/rootfs-*.extracted
		find "$CACHE" -maxdepth 1 -name 'rootfs-*' -type d -exec rm -rf {} +
		mkdir -p "$base"
		zstd -q -d -c "$tarball" | tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$base" -xf -
		touch "$base.extracted"
	fi
	rm -rf "$WORK"
	mkdir -p "$WORK/rootfs" "$WORK/upper" "$WORK/ovl" "$WORK/data" "$WORK/state" "$WORK/boot/grub"
	local root="$WORK/rootfs"
	# (in this script's private mount namespace: the mount goes when the script ends)
	mount -t overlay overlay -o "lowerdir=$base,upperdir=$WORK/upper,workdir=$WORK/ovl" "$root" ||
		die "cannot mount an overlay on $root"

	stage "project"
	install_project "$root"
	configure_rootfs "$root"
	write_os_release "$root"

	stage "preload"
	local dkey dtar
	dkey=$({ image_ids; dockerd --version; } | sha256sum | cut -c1-16)
	dtar="$CACHE/docker-$dkey.tar.zst"
	[[ -f $dtar ]] || build_docker_root "$dtar"
	mkdir -p "$WORK/data/docker" "$WORK/data/resin-data/balena-supervisor"
	zstd -q -d -c "$dtar" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$WORK/data/docker" -xf -
	cp "$IMG_SRC/preload/apps.json" "$WORK/data/apps.json"

	stage "disk"
	# config.json: an unmanaged (local mode) qemux86-64 device; the supervisor adds a uuid
	# at first start. developmentMode false: no shell (vm.py sets it in its own copy).
	cp "$IMG_SRC/boot/config.json" "$WORK/boot/config.json"
	build_disk "$root" "$WORK/data" "$WORK/boot"
	cp "$root/usr/lib/os-release" "$OUT_DIR/$BOARD.os-release"
	prune_cache "rootfs-$key.tar.zst" "rootfs-$key" "rootfs-$key.extracted" \
		"docker-$dkey.tar.zst" "$(basename "$(wheelhouse)")"
	echo "$hash" >"$IMAGE.inputs"
	umount "$root"
	rm -rf "$WORK"
	stage "done: $IMAGE ($(du -m --apparent-size "$IMAGE" | cut -f1) MiB, $(du -m "$IMAGE" | cut -f1) MiB allocated)"
	echo "$IMAGE"
}

main "$@"; exit $?
