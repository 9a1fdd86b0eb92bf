#!/usr/bin/env bash
# Adds mknod(2) to a copy of LazyFS's sources (SRC = a copy of shared/tools/lazyfs).
# Upstream LazyFS has no mknod, so bind(2) of a Unix socket on it fails with ENOSYS,
# and the agent cannot create its control socket (ROOT/control.sock) in a root on
# LazyFS. The added operation passes straight to the folder below, as LazyFS does
# for mkdir: a name-space operation, outside the page cache the campaign is about.
# Usage: lazyfs-mknod.sh SRC   (idempotent)
set -euo pipefail
src=${1:?usage: lazyfs-mknod.sh SRC}
hpp="$src/lazyfs/include/lazyfs/lazyfs.hpp"
cpp="$src/lazyfs/src/lazyfs.cpp"
grep -q 'lfs_mknod' "$hpp" && grep -q 'lfs_mknod' "$cpp" && exit 0
decl='    static int lfs_mkdir (const char* path, mode_t mode);'
grep -qF "$decl" "$hpp" || { echo "lazyfs-mknod: $hpp has changed; no '$decl'" >&2; exit 1; }
tail -1 "$cpp" | grep -q '^} // namespace lazyfs' || { echo "lazyfs-mknod: $cpp does not end its namespace as expected" >&2; exit 1; }
awk -v decl="$decl" '{ print } $0 == decl { print ""; print "    static int lfs_mknod (const char* path, mode_t mode, dev_t rdev);" }' "$hpp" >"$hpp.new"
mv "$hpp.new" "$hpp"
sed -i '$d' "$cpp"
cat >>"$cpp" <<'CPP'
int LazyFS::lfs_mknod (const char* path, mode_t mode, dev_t rdev) {

    std::shared_lock<std::shared_mutex> lock (cache_command_lock);

    if (this_ ()->FSConfig->log_all_operations) {
        spdlog::info ("[lazyfs.ops]: {}(path={})", __FUNCTION__, path);
    }

    if (mknod (path, mode, rdev) == -1)
        return -errno;

    return 0;
}

} // namespace lazyfs
CPP
