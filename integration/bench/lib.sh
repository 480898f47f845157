# Shared by the benchmark scripts (sourced).

# busybox_tar WORKDIR: a busybox root filesystem (every applet linked,
# /etc/passwd with root) at WORKDIR/rootfs and as WORKDIR/busybox.tar.
busybox_tar() {
    local work=$1
    mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
    cp /bin/busybox "$work/rootfs/bin/"
    for a in $(/bin/busybox --list-full); do
        [ "$a" = bin/busybox ] && continue
        mkdir -p "$work/rootfs/$(dirname "$a")"; ln -sf /bin/busybox "$work/rootfs/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$work/rootfs/etc/passwd"
    tar -C "$work/rootfs" -cf "$work/busybox.tar" .
}
