#!/usr/bin/env bash
# One command each, on a fresh Debian machine, as root:
#   ./setup.sh demo   install everything, then deploy to a local demo fleet of real sshd hosts
#   ./setup.sh test   install everything, then run the whole test suite
#   ./setup.sh deps   install everything, run nothing
# It installs the Debian packages the fleet needs and the Python packages into ./.venv.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-test}
shift || true

APT_PACKAGES=(openssh-server openssh-client git ruby ruby-bundler puma ruby-sequel ruby-sqlite3 ruby-rack
              sqlite3 util-linux procps python3 python3-venv python3-pip)

need_apt=0
for tool in sshd git ruby bundle puma unshare; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then need_apt=1; fi
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt=1
# The tests also run the access point on a real PostgreSQL server they start (initdb into a temp dir).
if [ "$mode" != demo ]; then
  APT_PACKAGES+=(postgresql)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt=1
fi
if [ "$need_apt" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root (it installs Debian packages)" >&2; exit 2; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi
# sshd must not be started by the package's service: the fleet runs its own sshd per host.
mkdir -p /run/sshd

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
extras=test
[ "$mode" != demo ] && extras=test,postgres
.venv/bin/python -m pip install -q -e ".[$extras]"
export PATH="$PWD/.venv/bin:$PATH"

case "$mode" in
  demo)
    exec pampa demo "$@"
    ;;
  deps)
    exit 0
    ;;
  test)
    ruff check --no-cache . || { echo "setup.sh: ruff found problems (see above); nothing was tested" >&2; exit 1; }
    set +e
    python -m pytest -q -p no:cacheprovider "$@"
    code=$?
    # pytest's 5 means "no tests ran": that is a failure of the suite, not a pass.
    exit $code
    ;;
  *)
    echo "usage: ./setup.sh demo|test|deps [args...]" >&2
    exit 2
    ;;
esac
