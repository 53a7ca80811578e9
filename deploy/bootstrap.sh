#!/usr/bin/env bash
# Prepare a machine for reapi: the Python venv, the action sandbox (bubblewrap, and
# as root the unprivileged user actions run as), and with --test the system packages
# the test suite drives for real (redis-server, Bazel made offline, an emulated arm64).
#
#   deploy/bootstrap.sh            # .venv with reapi installed (editable), bubblewrap, user reapi-action
#   deploy/bootstrap.sh --test     # plus redis-server, haproxy, chromium (+ driver), Debian's bazel-bootstrap,
#                                  # and what the arm64 worker test needs (qemu-user, ...)
#   deploy/bootstrap.sh --find-shared bazel/setup-offline-bazel   # where that file is
#
# Installs Debian packages only when they are missing and we run as root; otherwise
# it says what is missing. Safe to run again: it does nothing when all is in place.
set -euo pipefail
# A relative $REAPI_SHARED_DIR means from where we were called, as in tests/support/shared.py.
case "${REAPI_SHARED_DIR:-}" in ""|/*) ;; *) REAPI_SHARED_DIR="$PWD/$REAPI_SHARED_DIR" ;; esac
cd "$(dirname "$0")/.."

# The workplace's shared folder, searched the same way as tests/support/shared.py does:
# $REAPI_SHARED_DIR if set, then a directory named `shared` beside the checkout
# (../shared), then beside each ancestor of the checkout, nearest first (../../shared,
# ...; a CI clone placed deeper still finds it). The first candidate that holds the
# wanted file wins: its path is printed. When none does, the message names every
# place looked in.
find_shared() {  # $1: a path inside the shared folder, e.g. bazel/setup-offline-bazel
  local want=$1 dir cand looked
  local candidates=()
  [ -n "${REAPI_SHARED_DIR:-}" ] && candidates+=("$REAPI_SHARED_DIR")
  dir=$(pwd -P)
  while [ "$dir" != / ]; do
    dir=$(dirname "$dir")
    candidates+=("${dir%/}/shared")
  done
  for cand in "${candidates[@]}"; do
    [ -e "$cand/$want" ] && { echo "$cand/$want"; return 0; }
  done
  looked=$(printf '%s, ' "${candidates[@]}")
  echo "bootstrap: $want is in no shared folder (looked in ${looked%, }; set REAPI_SHARED_DIR to the folder)" >&2
  return 1
}

want_test=0
case "${1:-}" in
  --test) want_test=1 ;;
  --find-shared) find_shared "${2:?usage: deploy/bootstrap.sh --find-shared PATH}"; exit ;;
esac

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "bootstrap: missing system packages: $* (install them, or run as root on Debian)" >&2
    return 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python=${PYTHON:-python3}
# A minimal Debian has no Python at all; bookworm's python3 is 3.11.
command -v "$python" >/dev/null || apt_install python3 python3-venv
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "bootstrap: reapi needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$python" -m venv .venv; }
fi
stamp=.venv/.reapi-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -U pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

# The worker runs every action in a bubblewrap sandbox (docs/WORKER.md, "Sealed
# actions"); without it, it falls back to weaker isolation and says so at start.
command -v bwrap >/dev/null || apt_install bubblewrap || echo "bootstrap: without bubblewrap (bwrap) the worker runs actions in its weaker process fallback" >&2
# A worker running as root runs actions as this unprivileged system user (its
# `run_as` default; without it, `nobody`).
if [ "$(id -u)" = 0 ] && ! id reapi-action >/dev/null 2>&1; then
  if command -v useradd >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin reapi-action
  else
    echo "bootstrap: no useradd; create a system user reapi-action, or actions run as nobody" >&2
  fi
fi

# The git client serves Remote Asset fetches of git repositories; optional for `make run`.
command -v git >/dev/null || apt_install git || echo "bootstrap: without git, FetchDirectory of git repositories fails" >&2

if [ "$want_test" = 1 ]; then
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  # deploy/replicated/up.sh balances its frontend replicas with haproxy.
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  command -v git >/dev/null || missing+=(git)
  # The web console's tests run in a real headless Chromium driven through chromedriver.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # The arm64 worker test (tests/e2e/test_arm_worker.py): qemu-user registered with
  # binfmt_misc, mmdebstrap for its rootfs, bwrap (above) to run in it, a cross compiler.
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
  # Debian's Bazel 4.2.3 speaks TLS (grpcs://) only through netty-tcnative's OpenSSL:
  # its netty lacks the JDK's ALPN support (tests/support/bazel_tls.py).
  if command -v dpkg-query >/dev/null && ! dpkg-query -W -f='${Status}' libnetty-tcnative-jni 2>/dev/null | grep -q "ok installed"; then
    missing+=(libnetty-tcnative-jni)
  fi
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if setup=$(find_shared bazel/setup-offline-bazel); then
    # Installs bazel-bootstrap (which brings build-essential and a JDK) and the rule
    # packages the offline rc needs. The tests run it again for a private rc dir.
    if ! "$setup" >/dev/null; then
      [ "$(id -u)" = 0 ] && exit 1
      echo "bootstrap: Bazel is not ready; the Bazel end-to-end tests will fail (pytest -m 'not bazel' leaves them out)" >&2
    fi
  else
    echo "bootstrap: the Bazel end-to-end tests need it" >&2
  fi
fi
