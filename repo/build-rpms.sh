#!/usr/bin/env bash
# Build noarch RPMs and source RPMs of shoal-server, shoal-agent and shoal-client (`make rpms`).
#
# For each package: read __version__ from its package (the one place the version lives), build an
# sdist with $PYTHON, then `rpmbuild -ba` its spec (repo/specs/) in a throwaway _topdir. The spec
# copy that goes into the SRPM gets the version and sdist name as %global lines, so
# `rpmbuild --rebuild shoal-agent-*.src.rpm` works on an EL host without this script.
#
# Environment:
#   PYTHON            interpreter with build, setuptools>=61, wheel and pip (make passes the venv's)
#   SHOAL_DIST_DIR    where the .rpm files go (default: dist/ at the repository root)
#   SHOAL_PACKAGES    which packages to build (default: "server agent client")
#   SHOAL_RPM_PYTHON_VERSION  target python3 version, e.g. 3.9 for EL9 (default: $PYTHON's). The
#                     packages are pure Python; this only decides /usr/lib/python3.X/site-packages
#                     and with it the python(abi) requirement rpm derives from that path.
#   RPMBUILD_FLAGS    extra rpmbuild arguments (e.g. --define "dist .el9")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
DIST=${SHOAL_DIST_DIR:-$ROOT/dist}
PACKAGES=${SHOAL_PACKAGES:-server agent client}
# Builds happen outside the work tree so nothing (egg-info, build/) is written next to the sources.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-rpms.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for tool in rpmbuild "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "build-rpms: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIST"
target_flags=()
if [ -n "${SHOAL_RPM_PYTHON_VERSION:-}" ]; then
    [[ "$SHOAL_RPM_PYTHON_VERSION" =~ ^3\.[0-9]+$ ]] || {
        echo "build-rpms: SHOAL_RPM_PYTHON_VERSION must look like 3.9" >&2; exit 1; }
    target_flags=(--define "python3_sitelib /usr/lib/python$SHOAL_RPM_PYTHON_VERSION/site-packages")
fi

# conf/ files each spec lists as Source2.. (Source0 is the sdist, Source1 the LICENSE).
sources_for() {
    case "$1" in
        server) echo "conf/shoal_server.conf conf/shoal-server.service conf/shoal.conf conf/shoal.wsgi conf/rabbitmq.conf conf/rabbitmq-definitions.json conf/rabbitmq-shoal-users conf/rabbitmq-legacy.conf" ;;
        agent) echo "conf/shoal_agent.conf conf/shoal-agent.service conf/shoal-agent.logrotate conf/shoal-agent.init" ;;
        client) echo "conf/shoal_client.conf" ;;
    esac
}

for short in $PACKAGES; do
    name="shoal-$short"
    module="shoal_$short"
    src="$ROOT/$name"
    version=$("$PYTHON" - "$src/$module/__init__.py" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in node.targets):
        print(ast.literal_eval(node.value))
        break
else:
    sys.exit(f"no __version__ in {sys.argv[1]}")
EOF
)
    top="$WORK/$name/rpmbuild"
    mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS} "$WORK/$name/src"

    # cp -L: the agent's amqp.py and inifile.py are symlinks into shoal-server; ship real files.
    tree="$WORK/$name/src/$name"
    cp -rL "$src" "$tree"
    rm -rf "$tree"/*.egg-info "$tree/build" "$tree/dist"
    find "$tree" -name __pycache__ -prune -exec rm -rf {} +
    find "$tree" -name '*.py[co]' -delete
    "$PYTHON" -m build --sdist --no-isolation --outdir "$top/SOURCES" "$tree" >"$WORK/$name/sdist.log" 2>&1 || {
        cat "$WORK/$name/sdist.log" >&2; echo "build-rpms: sdist of $name failed" >&2; exit 1; }
    sdist=$(cd "$top/SOURCES" && ls -- *.tar.gz)
    sdist_base=${sdist%.tar.gz}

    cp "$ROOT/LICENSE" "$top/SOURCES/"
    for file in $(sources_for "$short"); do
        [ -f "$src/$file" ] || { echo "build-rpms: $name/$file is missing" >&2; exit 1; }
        cp "$src/$file" "$top/SOURCES/"
    done
    {
        echo "%global shoal_version $version"
        echo "%global sdist_base $sdist_base"
        cat "$ROOT/repo/specs/$name.spec"
    } >"$top/SPECS/$name.spec"

    echo "build-rpms: $name $version"
    # --nodeps: BuildRequires name EL packages this build host need not have (e.g. Debian's rpm).
    # xz payloads: readable by every rpm still in use at sites, unlike zstd.
    # shellcheck disable=SC2086
    rpmbuild -ba --nodeps --quiet \
        --define "_topdir $top" \
        --define "python3 $PYTHON" \
        --define "shoal_version $version" \
        --define "_binary_payload w6.xzdio" \
        --define "_source_payload w6.xzdio" \
        "${target_flags[@]}" \
        ${RPMBUILD_FLAGS:-} \
        "$top/SPECS/$name.spec" >"$WORK/$name/rpmbuild.log" 2>&1 || {
        cat "$WORK/$name/rpmbuild.log" >&2; echo "build-rpms: rpmbuild of $name failed" >&2; exit 1; }
    cp "$top"/RPMS/noarch/*.rpm "$top"/SRPMS/*.src.rpm "$DIST/"
done
ls -1 "$DIST"/*.rpm
