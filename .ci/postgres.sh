#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite, on loopback, in a directory.
#
#   .ci/postgres.sh start DIR   -> prints the URL of an empty database (server in DIR)
#   .ci/postgres.sh stop DIR    -> stops that server and removes DIR (safe to call twice)
#
# Finds the server binaries (/usr/lib/postgresql/*/bin, or pg_config --bindir);
# installs Debian's `postgresql` package when they are missing and we are root.
# The server runs as an unprivileged user (PostgreSQL refuses root): the caller
# when not root, else `postgres` if it exists, else a `learnkit-pg` user made here
# (LEARNKIT_PG_USER names another, made if missing).
# LEARNKIT_PG_INSTALL=1 installs the package even when binaries are found (to
# try the clean-machine path on a machine that has them).
# Trust authentication on 127.0.0.1 only, on a free port; durability is off
# (fsync, synchronous_commit): this server holds nothing worth keeping.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir)
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    fi
    return 1
}

install_server() {
    [ "$(id -u)" = 0 ] || die "no PostgreSQL server binaries found; install Debian's postgresql package (apt-get install postgresql)"
    echo "postgres.sh: installing PostgreSQL (apt-get install postgresql)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own cluster is not needed (or started: policy-rc.d may forbid it).
    apt-get install -y -qq --no-install-recommends postgresql >&2
}

run_as() {  # run_as USER CMD... (USER empty: as ourselves)
    local user=$1; shift
    if [ -z "$user" ]; then "$@"
    elif command -v runuser >/dev/null 2>&1; then runuser -u "$user" -- "$@"
    else su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
    fi
}

start() {
    local dir=$1 bin user="" port url
    if [ "${LEARNKIT_PG_INSTALL:-}" = 1 ]; then install_server; fi
    bin=$(bindir) || { install_server; bin=$(bindir) || die "PostgreSQL installed but initdb not found"; }
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        user=${LEARNKIT_PG_USER:-}
        if [ -z "$user" ]; then
            if id postgres >/dev/null 2>&1; then user=postgres; else user=learnkit-pg; fi
        fi
        if ! id "$user" >/dev/null 2>&1; then
            echo "postgres.sh: creating user $user" >&2
            useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
        fi
        chown "$user" "$dir"
        chmod 700 "$dir"
    fi
    echo "$user" > "$dir/user"
    echo "$bin" > "$dir/bindir"
    run_as "$user" "$bin/initdb" -D "$dir/data" -U learnkit --auth=trust -E UTF8 --no-locale \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    run_as "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null || { cat "$dir/server.log" >&2; die "the server did not start"; }
    run_as "$user" "$bin/createdb" -h 127.0.0.1 -p "$port" -U learnkit learnkit_test
    url="postgresql://learnkit@127.0.0.1:$port/learnkit_test"
    echo "$url" > "$dir/url"
    echo "$url"
}

stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    if [ -f "$dir/bindir" ] && [ -d "$dir/data" ]; then
        run_as "$(cat "$dir/user" 2>/dev/null || true)" "$(cat "$dir/bindir")/pg_ctl" \
            -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) [ $# = 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
