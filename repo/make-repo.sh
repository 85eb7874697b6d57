#!/usr/bin/env bash
# Build the yum repositories repo/prod and repo/dev from dist/*.rpm, and repo/shoal.repo (`make repo`).
#
# Every noarch RPM in dist/ goes to dev/; releases (versions made of digits and dots only, no
# .dev/a/b/rc part) also go to prod/. Older versions stay, so sites can downgrade. Metadata is made
# with createrepo_c (--update when it already exists: unchanged packages are not re-read).
#
# Signing: set SHOAL_GPG_KEY to a key (id, fingerprint or user id) in gpg's keyring ($GNUPGHOME)
# with no passphrase or an unlocked agent. The packages copied into the repositories are signed
# with `rpm --addsign` (dist/ is left as built), repodata/repomd.xml gets a detached signature,
# the public key is exported as RPM-GPG-KEY-shoal, and shoal.repo says gpgcheck=1 and
# repo_gpgcheck=1. Without a key the repositories are unsigned and shoal.repo says so.
#
# Environment:
#   SHOAL_DIST_DIR   where the built RPMs are (default: dist/ at the repository root)
#   SHOAL_REPO_DIR   where prod/, dev/, shoal.repo and the key go (default: repo/)
#   SHOAL_REPO_URL   the URL SHOAL_REPO_DIR is published at (default: https://shoal.example.org/repo)
#   SHOAL_GPG_KEY    signing key (default: none, unsigned)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=${SHOAL_DIST_DIR:-$ROOT/dist}
OUT=${SHOAL_REPO_DIR:-$ROOT/repo}
URL=${SHOAL_REPO_URL:-https://shoal.example.org/repo}
URL=${URL%/}
KEY=${SHOAL_GPG_KEY:-}

command -v createrepo_c >/dev/null || { echo "make-repo: createrepo_c not found" >&2; exit 1; }
shopt -s nullglob
rpms=()
for file in "$DIST"/*.rpm; do
    case "$file" in *.src.rpm) continue ;; esac
    rpms+=("$file")
done
[ "${#rpms[@]}" -gt 0 ] || { echo "make-repo: no binary RPMs in $DIST (run make rpms)" >&2; exit 1; }

mkdir -p "$OUT/prod" "$OUT/dev"
for file in "${rpms[@]}"; do
    version=$(rpm -qp --nosignature --qf '%{VERSION}' "$file")
    cp -p "$file" "$OUT/dev/"
    if [[ "$version" =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
        cp -p "$file" "$OUT/prod/"
    fi
done

if [ -n "$KEY" ]; then
    gpg --batch --list-secret-keys "$KEY" >/dev/null 2>&1 || {
        echo "make-repo: SHOAL_GPG_KEY=$KEY has no secret key in ${GNUPGHOME:-~/.gnupg}" >&2; exit 1; }
    gpg --batch --yes --armor --export "$KEY" >"$OUT/RPM-GPG-KEY-shoal"
fi

for channel in prod dev; do
    dir="$OUT/$channel"
    if [ -n "$KEY" ]; then
        signed=("$dir"/*.rpm)
        if [ "${#signed[@]}" -gt 0 ]; then
            # __gpg: some rpm builds (Debian's) expect a gpg2 binary that is not there.
            rpm --addsign --define "_gpg_name $KEY" --define "__gpg $(command -v gpg)" \
                "${signed[@]}" </dev/null >/dev/null
        fi
    fi
    if [ -f "$dir/repodata/repomd.xml" ]; then
        createrepo_c --quiet --update "$dir"
    else
        createrepo_c --quiet "$dir"
    fi
    rm -f "$dir/repodata/repomd.xml.asc"
    if [ -n "$KEY" ]; then
        gpg --batch --yes --armor --local-user "$KEY" --detach-sign "$dir/repodata/repomd.xml"
    fi
done

if [ -n "$KEY" ]; then
    check="gpgcheck=1
repo_gpgcheck=1
gpgkey=$URL/RPM-GPG-KEY-shoal"
else
    check="# These repositories were built without SHOAL_GPG_KEY: the packages are not signed.
gpgcheck=0"
fi
cat >"$OUT/shoal.repo" <<EOF
# Shoal yum repositories: copy to /etc/yum.repos.d/shoal.repo (or use the Puppet class shoal).
[shoal]
name=Shoal
baseurl=$URL/prod
enabled=1
$check

[shoal-dev]
name=Shoal (development builds)
baseurl=$URL/dev
enabled=0
$check
EOF

echo "make-repo: $OUT/prod ($(ls "$OUT/prod" | grep -c '\.rpm$') packages), $OUT/dev ($(ls "$OUT/dev" | grep -c '\.rpm$') packages), $OUT/shoal.repo -> $URL"
if [ -z "$KEY" ]; then
    echo "make-repo: unsigned (set SHOAL_GPG_KEY to sign)"
fi
