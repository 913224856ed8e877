#!/usr/bin/env bash
# Helpers shared by the tests in hack/tests/ (sourced after hack/lib.sh).

# tests::containerd DIR: start a throw-away containerd rooted in DIR (own root, state and socket,
# CRI plugin disabled: nothing but the image store), stopped at exit. Sets SCRATCH_CTR to the ctr
# command line for it, in the namespace the kubelet uses (k8s.io), and SCRATCH_CTD_PID.
# Needs root and Debian's containerd. Used to run a real containerd's image import on a tarball
# without touching the local cluster's.
SCRATCH_CTR=()
SCRATCH_CTD_PID=""
tests::containerd() {
  local dir="$1"
  mkdir -p "${dir}"
  cat >"${dir}/config.toml" <<TOML
version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
  containerd --config "${dir}/config.toml" >"${dir}/log" 2>&1 &
  SCRATCH_CTD_PID=$!
  util::trap_add "kill ${SCRATCH_CTD_PID} 2>/dev/null || true"
  SCRATCH_CTR=(ctr --address "${dir}/containerd.sock" --namespace k8s.io)
  util::wait_for "throw-away containerd" 30 "${SCRATCH_CTR[@]}" version || { tail -n 20 "${dir}/log" >&2; return 1; }
}

