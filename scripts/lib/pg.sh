# Throwaway Postgres for tests and benchmarks: sourced by scripts/test and scripts/bench.
#   pg_start [extra postgres -c options...]  -> exports ACTCORE_TEST_PG_URL (admin URL)
#   pg_stop                                  (also installed as an EXIT trap)
# Postgres refuses to run as root, so as root the cluster runs as the
# `postgres` system user (created if missing) in a directory it owns.

pg_bin_dir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
    return 1
}

pg_ensure_installed() {
    if pg_bin_dir >/dev/null; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "scripts: PostgreSQL server binaries not found; installing with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        pg_bin_dir >/dev/null && return 0
    fi
    echo "scripts: no initdb/pg_ctl found. Install PostgreSQL (apt-get install postgresql) or set DATABASE_URL to a server." >&2
    return 1
}

pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# as_pg CMD...: run as the cluster's owner.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    pg_ensure_installed || return 1
    local bin port
    bin=$(pg_bin_dir)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi
    PG_DIR=$(mktemp -d /tmp/actcore-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    port=$(pg_free_port)
    as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_DIR -c max_connections=300 $*" \
        >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
    export PG_BIN="$bin" PG_DIR
    export ACTCORE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    trap pg_stop EXIT
    echo "scripts: throwaway Postgres on 127.0.0.1:$port ($PG_DIR)" >&2
}

pg_stop() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    PG_DIR=
}
