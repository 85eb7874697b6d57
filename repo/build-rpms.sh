#!/usr/bin/env bash
# Build noarch RPMs and source RPMs for EL 9 (`make rpms`), from any host with rpmbuild:
# shoal-server (and its subpackage shoal-server-httpd), shoal-agent, shoal-client, and the
# Python modules EL 9 and EPEL 9 lack (python3-webpy, python3-pika: repo/specs/python3-*.spec).
#
# For each Shoal package: read __version__ from its package (the one place the version lives),
# build an sdist with $PYTHON, then `rpmbuild -ba` its spec (repo/specs/) in a throwaway _topdir.
# The spec copy that goes into the SRPM gets the version and sdist name as %global lines, so
# `rpmbuild --rebuild shoal-agent-*.src.rpm` works on an EL host without this script.
# For each third-party module: the spec's Version and %pypi_name say which PyPI sdist to fetch
# (`pip download --no-deps --no-binary :all:`, cached); the SRPM carries it.
#
# Environment:
#   PYTHON            interpreter with build, setuptools, wheel and pip (make passes the venv's)
#   SHOAL_DIST_DIR    where the .rpm files go (default: dist/ at the repository root)
#   SHOAL_PACKAGES    which Shoal packages to build (default: "server agent client")
#   SHOAL_THIRD_PARTY which third-party specs to build (default: "python3-webpy python3-pika";
#                     empty: none)
#   SHOAL_SDIST_CACHE where downloaded PyPI sdists are kept (default: ~/.cache/shoal-rpms)
#   SHOAL_RPM_PYTHON_VERSION  target python3 version (default: 3.9, EL 9's). The packages are pure
#                     Python; this decides /usr/lib/python3.X/site-packages and with it the
#                     python(abi) requirement rpm derives from that path. Empty: $PYTHON's.
#   SHOAL_RPM_DIST    the %{dist} tag (default: .el9). Empty: the build host's own %{dist}
#                     (on an EL host, rpmbuild --rebuild of the SRPMs does the same).
#   RPMBUILD_FLAGS    extra rpmbuild arguments
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
DIST=${SHOAL_DIST_DIR:-$ROOT/dist}
PACKAGES=${SHOAL_PACKAGES-server agent client}
THIRD_PARTY=${SHOAL_THIRD_PARTY-python3-webpy python3-pika}
SDIST_CACHE=${SHOAL_SDIST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal-rpms}
TARGET_PYTHON=${SHOAL_RPM_PYTHON_VERSION-3.9}
DIST_TAG=${SHOAL_RPM_DIST-.el9}
# Builds happen outside the work tree so nothing (egg-info, build/) is written next to the sources.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-rpms.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for tool in rpmbuild "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "build-rpms: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIST"
target_flags=()
if [ -n "$TARGET_PYTHON" ]; then
    [[ "$TARGET_PYTHON" =~ ^3\.[0-9]+$ ]] || {
        echo "build-rpms: SHOAL_RPM_PYTHON_VERSION must look like 3.9" >&2; exit 1; }
    target_flags=(--define "python3_sitelib /usr/lib/python$TARGET_PYTHON/site-packages"
                  --define "python3_version $TARGET_PYTHON")
fi
if [ -n "$DIST_TAG" ]; then
    [[ "$DIST_TAG" =~ ^\.[a-z0-9_.]+$ ]] || { echo "build-rpms: SHOAL_RPM_DIST must look like .el9" >&2; exit 1; }
    target_flags+=(--define "dist $DIST_TAG")
fi

# rpmbuild -ba SPEC in the _topdir TOP, logging to LOG; the binary and source RPMs go to $DIST.
build_spec() {
    local top=$1 spec=$2 log=$3
    # --nodeps: BuildRequires name EL packages this build host need not have (e.g. Debian's rpm).
    # xz payloads: readable by every rpm still in use at sites, unlike zstd.
    # shellcheck disable=SC2086
    rpmbuild -ba --nodeps --quiet \
        --define "_topdir $top" \
        --define "python3 $PYTHON" \
        --define "_binary_payload w6.xzdio" \
        --define "_source_payload w6.xzdio" \
        "${target_flags[@]}" \
        ${RPMBUILD_FLAGS:-} \
        "$spec" >"$log" 2>&1 || {
        cat "$log" >&2; echo "build-rpms: rpmbuild of $(basename "$spec") failed" >&2; exit 1; }
    cp "$top"/RPMS/noarch/*.rpm "$top"/SRPMS/*.src.rpm "$DIST/"
}

# The value of a spec's "Tag:" line or "%global name value" line.
spec_value() {
    sed -n -E "s/^($2:[[:space:]]+|%global[[:space:]]+$2[[:space:]]+)([^[:space:]]+).*/\2/p" "$1" | head -n 1
}

for spec_name in $THIRD_PARTY; do
    spec="$ROOT/repo/specs/$spec_name.spec"
    [ -f "$spec" ] || { echo "build-rpms: no spec $spec" >&2; exit 1; }
    pypi_name=$(spec_value "$spec" pypi_name)
    version=$(spec_value "$spec" Version)
    [ -n "$pypi_name" ] && [ -n "$version" ] || { echo "build-rpms: $spec lacks pypi_name or Version" >&2; exit 1; }
    top="$WORK/$spec_name/rpmbuild"
    mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS} "$SDIST_CACHE"
    sdist="$SDIST_CACHE/$pypi_name-$version.tar.gz"
    if [ ! -s "$sdist" ]; then
        # Build time only: the SRPM carries the sdist, nothing downloads when it is rebuilt.
        "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
            --dest "$WORK/$spec_name" "$pypi_name==$version" >"$WORK/$spec_name/download.log" 2>&1 || {
            cat "$WORK/$spec_name/download.log" >&2; echo "build-rpms: cannot download the $pypi_name $version sdist" >&2; exit 1; }
        got=$(ls "$WORK/$spec_name"/*.tar.gz)
        cp "$got" "$sdist.tmp" && mv "$sdist.tmp" "$sdist"
    fi
    cp "$sdist" "$top/SOURCES/"
    cp "$spec" "$top/SPECS/"
    echo "build-rpms: $spec_name $version (PyPI $pypi_name)"
    build_spec "$top" "$top/SPECS/$spec_name.spec" "$WORK/$spec_name/rpmbuild.log"
done

# conf/ files each spec lists as Source2.. (Source0 is the sdist, Source1 the LICENSE).
sources_for() {
    case "$1" in
        server) echo "conf/shoal_server.conf conf/shoal-server.service conf/shoal.conf conf/shoal.wsgi conf/rabbitmq.conf conf/rabbitmq-definitions.json conf/rabbitmq-shoal-users conf/shoal-server.logrotate conf/rabbitmq-legacy.conf" ;;
        agent) echo "conf/shoal_agent.conf conf/shoal-agent.service conf/shoal-agent.logrotate conf/shoal-agent.init" ;;
        client) echo "conf/shoal_client.conf conf/shoal-client.service conf/shoal-client.timer conf/shoal-client.cron" ;;
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
    build_spec "$top" "$top/SPECS/$name.spec" "$WORK/$name/rpmbuild.log"
done
ls -1 "$DIST"/*.rpm
