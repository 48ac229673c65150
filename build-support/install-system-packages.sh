#!/usr/bin/env bash
# Installs what a fresh machine of this project's kind lacks; safe to run again (it skips what is there).
# Pants 2.17 needs Python 3.7-3.9 and the services run on CPython 3.11; both come from pyenv here.
set -euo pipefail

have_python() { # version
  local root
  root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  command -v "python$1" >/dev/null 2>&1 && "python$1" -c '' 2>/dev/null && return 0
  compgen -G "$root/versions/$1.*/bin/python$1" >/dev/null
}

for version in 3.9 3.11; do
  if ! have_python "$version"; then
    if command -v pyenv >/dev/null 2>&1; then
      echo "install: Python $version (pyenv)"
      pyenv install --skip-existing "$version"
    else
      echo "install: Python $version is missing and pyenv is not installed; install python$version first" >&2
      exit 1
    fi
  fi
done

# Python 3.11 must be reachable as python3.11 for the PEX binaries' shebang and for Pants.
root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
if command -v pyenv >/dev/null 2>&1 && ! python3.11 -c '' 2>/dev/null; then
  pyenv global "$(pyenv global | head -1)" "$(ls -d "$root"/versions/3.11.* | head -1 | xargs basename)"
fi
# The browser tests drive Debian's Chromium (never a downloaded browser: none can be fetched here).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "install: chromium (Debian package, for the browser tests)"
    sudo_if_needed=""
    [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq chromium >/dev/null
  else
    echo "install: chromium is missing and apt-get is not here; install Chromium for the browser tests" >&2
    exit 1
  fi
fi
echo "install: system packages are in place"
