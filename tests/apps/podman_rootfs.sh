# Runs "podman run --rootfs" from the host's own root filesystem, no image and no
# registry:  sh podman_rootfs.sh ROOTFS STORE NAME COMMAND...
# Run it in a mount namespace of its own (unshare --mount): the mounts below stay there.
set -e
mount --make-rprivate /
# crun refuses the hybrid cgroup v1/v2 layout of some hosts ("cgroups in hybrid mode not
# supported"); a pure cgroup2 mount here, and --cgroups=disabled, keep it out of that.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# pivot_root cannot make / itself the new root: a plain (non-recursive) bind of / can.
mount --bind / "$1"
rootfs=$1 store=$2 name=$3
shift 3
exec podman --root "$store/root" --runroot "$store/run" run --rm --name "$name" \
    --cgroups=disabled --network host --sdnotify=container --rootfs "$rootfs" "$@"
