#!/usr/bin/env bash
# bench/deps.sh: install the benchmark peers (nginx, haproxy, wrk) from Debian.
# Idempotent: does nothing when all three are already on PATH. Never leaves a system
# service running: the harness starts every peer itself, with a private config, on loopback.
set -euo pipefail

need=()
command -v nginx   >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk     >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -eq 0 ]; then
  echo "bench-deps: nginx, haproxy and wrk already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-deps: need root for apt-get (missing: ${need[*]})" >&2
  exit 1
fi

# A policy-rc.d that exits 101 tells invoke-rc.d not to start services the packages ship.
# Install one only for the duration of this script when the machine has none.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
# apt-get update once per machine boot-ish: skip it when the lists are fresh (< 6h).
lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -360 2>/dev/null | head -n1 || true)
if [ -z "$lists" ]; then
  apt-get update -q
fi

pkgs=()
for p in "${need[@]}"; do
  if [ "$p" = nginx ]; then
    # nginx-light is smaller; bookworm ships nginx only (the -light flavour was dropped).
    if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
  else
    pkgs+=("$p")
  fi
done
echo "bench-deps: apt-get install ${pkgs[*]}"
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${pkgs[@]}"

# Belt and braces: if something started anyway (no policy-rc.d honoured), stop it.
for svc in nginx haproxy; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done

for b in nginx haproxy wrk; do
  if command -v "$b" >/dev/null 2>&1; then echo "bench-deps: $b -> $(command -v "$b")"; else echo "bench-deps: $b still missing" >&2; fi
done
