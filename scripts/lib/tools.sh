# System tools the tests need beyond Rust and Postgres, installed when
# missing (CI runs as root on a fresh machine): sourced by scripts/test.
# Each tool has its own function, so other tools' functions merge beside it.

# tools_browser TARGET_DIR: Debian's Chromium and Node, and playwright-core
# (pinned by tests/browser/package-lock.json) under TARGET_DIR/browser-node,
# for the status-page test (tests/tests/browser.rs).
tools_browser() {
    local target="$1" missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "scripts: installing ${missing[*]} with apt-get (the browser test needs them)" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "scripts: the browser test needs ${missing[*]}: apt-get install ${missing[*]}" >&2
            return 1
        fi
    fi
    local dir="$target/browser-node"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)   # absolute: the tests run from their crate's folder
    if ! cmp -s tests/browser/package-lock.json "$dir/package-lock.json" || [ ! -d "$dir/node_modules/playwright-core" ]; then
        cp tests/browser/package.json tests/browser/package-lock.json "$dir/"
        npm ci --prefix "$dir" --no-audit --no-fund --silent
    fi
    export ACTCORE_BROWSER_NODE_MODULES="$dir/node_modules"
}
