#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, built from the components' own Go modules.
#
#   scripts/cluster.sh build    build (or reuse) the pinned binaries (and Prometheus) and the pause image
#   scripts/cluster.sh up       start etcd, the control plane, containerd, the kubelet, kube-proxy, DNS
#   scripts/cluster.sh down     stop everything and undo every change to the host (safe to repeat)
#   scripts/cluster.sh status   one line per component
#   scripts/cluster.sh kuberay  also run the KubeRay operator (CRDs, RBAC, own identity) on the cluster
#   scripts/cluster.sh import TARBALL...   import docker-archive/OCI image tarballs into its containerd
#                                          (- for one on standard input)
#
# Binaries, Go caches and the cluster's state live outside the clone, in
# ${TESTBED_CLUSTER_CACHE:-$HOME/.cache/raydask-testbed/cluster}. Needs root (network, mounts, cgroups).
# TESTBED_CLUSTER_DNS_RESYNC (default 30): the Service DNS records follow every change at once
# (watches); this is the period of an extra full refresh.
# Versions are pinned by cluster/go/*/go.mod and go.sum; see docs/real-cluster.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TESTBED_CLUSTER_CACHE:-$HOME/.cache/raydask-testbed/cluster}"
BIN="$CACHE/bin"
STATE="$CACHE/state"
RUN="$STATE/run"
LOGS="$STATE/logs"
PKI="$STATE/pki"

K8S_VERSION=v1.33.13
ETCD_VERSION=v3.5.35
KUBERAY_VERSION=v1.6.1
# Prometheus v3.16.0 is the Go module github.com/prometheus/prometheus v0.316.0. Built for the
# real-cluster tests: Debian's prometheus 2.42 has no Kubernetes service discovery.
PROMETHEUS_VERSION=v3.16.0
PAUSE_TAG=3.10.1
PAUSE_IMAGE="registry.k8s.io/pause:$PAUSE_TAG"

# Network: a bridge the script creates; its gateway address is the node IP.
BRIDGE=rdtb0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
NODE_NAME=testbed-node
APISERVER_PORT=6443
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
CNI_BIN_DIR=/usr/lib/cni
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy dnsmasq dns-sync)

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }
need_root() { [[ $(id -u) -eq 0 ]] || die "'$1' needs root (network, mounts, cgroups)"; }

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
# command -> Debian package providing it
declare -A PKG_FOR=(
  [containerd]=containerd [runc]=runc [ctr]=containerd [iptables]=iptables [ip]=iproute2
  [dnsmasq]=dnsmasq-base [gcc]=gcc [openssl]=openssl [conntrack]=conntrack [nft]=nftables
  [tar]=tar [sha256sum]=coreutils [curl]=curl [findmnt]=util-linux [setsid]=util-linux [ss]=iproute2 [sysctl]=procps
)

ensure_packages() {
  local missing=() cmd
  for cmd in "$@"; do
    if [[ $cmd == cni ]]; then
      [[ -x $CNI_BIN_DIR/bridge ]] || missing+=(containernetworking-plugins)
    elif [[ $cmd == libc-static ]]; then  # gcc -static needs libc.a (not pulled in without recommends)
      [[ -f $(gcc -print-file-name=libc.a 2>/dev/null) ]] ||
        missing+=(libc6-dev)
    else
      command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  need_root "installing ${missing[*]}"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  # policy-rc.d: the packages must not start their own system services (containerd.service).
  local prc=/usr/sbin/policy-rc.d had_prc=0
  [[ -e $prc ]] && had_prc=1
  [[ $had_prc == 1 ]] || { printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    [[ $had_prc == 1 ]] || rm -f "$prc"; die "apt-get install ${missing[*]} failed"; }
  [[ $had_prc == 1 ]] || rm -f "$prc"
}

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
build_stamp() {
  # Everything that decides the binaries: pins, go.sum, the Go toolchain, this script's build recipe.
  {
    echo "$K8S_VERSION $ETCD_VERSION $KUBERAY_VERSION $PROMETHEUS_VERSION $PAUSE_TAG"
    go version
    cat "$ROOT"/cluster/go/*/go.mod "$ROOT"/cluster/go/*/go.sum
    sed -n '/^# >>> build recipe/,/^# <<< build recipe/p' "${BASH_SOURCE[0]}"
  } | sha256sum | cut -d' ' -f1
}

# >>> build recipe
go_env() {
  export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local GOFLAGS=-mod=readonly
  export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
}

build_kubernetes() {
  local pkg=k8s.io/component-base/version
  local minor ld
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  local pkgs=() b
  for b in "${KUBE_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$ROOT/cluster/go/kubernetes" && nice -n 19 go build -trimpath -ldflags "$ld" -o "$BIN/.new/" "${pkgs[@]}")
}

build_etcd() {
  local ld="-s -w"
  (cd "$ROOT/cluster/go/etcd" &&
    nice -n 19 go build -trimpath -ldflags "$ld" -o "$BIN/.new/etcd" go.etcd.io/etcd/server/v3 &&
    nice -n 19 go build -trimpath -ldflags "$ld" -o "$BIN/.new/etcdctl" go.etcd.io/etcd/etcdctl/v3)
}

build_prometheus() {
  local ld="-s -w" pkg=github.com/prometheus/common/version
  ld+=" -X $pkg.Version=${PROMETHEUS_VERSION#v} -X $pkg.Branch=HEAD -X $pkg.BuildDate=19700101-00:00:00"
  (cd "$ROOT/cluster/go/prometheus" &&
    nice -n 19 go build -trimpath -ldflags "$ld" -o "$BIN/.new/prometheus" github.com/prometheus/prometheus/cmd/prometheus &&
    nice -n 19 go build -trimpath -ldflags "$ld" -o "$BIN/.new/promtool" github.com/prometheus/prometheus/cmd/promtool)
}

build_kuberay() {
  local mod="$ROOT/cluster/go/kuberay" dir
  (cd "$mod" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$BIN/.new/kuberay-operator" \
    github.com/ray-project/kuberay/ray-operator)
  # The CRDs and RBAC the operator needs ship in the same module.
  dir=$(cd "$mod" && go list -m -f '{{.Dir}}' github.com/ray-project/kuberay/ray-operator)
  mkdir -p "$BIN/.new/kuberay"
  cp -r "$dir/config/crd/bases" "$BIN/.new/kuberay/crd"
  cp "$dir/config/rbac/role.yaml" "$BIN/.new/kuberay/role.yaml"
  chmod -R u+w "$BIN/.new/kuberay"
}

build_pause() {
  # The pod sandbox image: Kubernetes' own pause.c, static, in a docker-archive tarball that
  # `ctr images import` accepts (no registry).
  local src tmp layer_sha cfg cfg_sha
  src=$(cd "$ROOT/cluster/go/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  [[ -f $src ]] || die "pause.c not found in the k8s.io/kubernetes module ($src)"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/rootfs"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-raydask" -o "$tmp/rootfs/pause" "$src"
  strip "$tmp/rootfs/pause" 2>/dev/null || true
  cp "$tmp/rootfs/pause" "$BIN/.new/pause"
  tar -C "$tmp/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$tmp/layer.tar" pause
  layer_sha=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  cfg='{"architecture":"amd64","os":"linux","config":{"User":"65535:65535","Entrypoint":["/pause"],"WorkingDir":"/"},'
  cfg+='"rootfs":{"type":"layers","diff_ids":["sha256:'$layer_sha'"]},"history":[{"created_by":"scripts/cluster.sh build_pause"}]}'
  printf '%s' "$cfg" >"$tmp/config.json"
  cfg_sha=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
  mkdir -p "$tmp/img/$layer_sha"
  mv "$tmp/layer.tar" "$tmp/img/$layer_sha/layer.tar"
  mv "$tmp/config.json" "$tmp/img/$cfg_sha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg_sha" "$PAUSE_IMAGE" "$layer_sha" \
    >"$tmp/img/manifest.json"
  tar -C "$tmp/img" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$BIN/.new/pause.tar" .
  rm -rf "$tmp"
}
# <<< build recipe

cmd_build() {
  # The newest `go` line of the pinned modules (etcd v3.5.35 says 1.26) is the oldest Go that builds them all.
  local need gov
  need=$(awk '$1 == "go" {print $2}' "$ROOT"/cluster/go/*/go.mod | sort -V | tail -1)
  command -v go >/dev/null || die "Go >= $need is needed to build; none on PATH"
  gov=$(go env GOVERSION | sed 's/^go//')
  [[ $(printf '%s\n%s\n' "$gov" "$need" | sort -V | head -1) == "$need" ]] || die "Go $gov is too old: the pinned modules need >= $need"
  ensure_packages gcc tar sha256sum
  ensure_packages libc-static
  local stamp; stamp=$(build_stamp)
  if [[ -f $BIN/.stamp && $(cat "$BIN/.stamp") == "$stamp" ]]; then
    local b ok=1
    for b in "${KUBE_BINS[@]}" etcd etcdctl kuberay-operator prometheus promtool pause pause.tar; do [[ -e $BIN/$b ]] || ok=0; done
    if [[ $ok == 1 ]]; then log "binaries up to date in $BIN (stamp ${stamp:0:12})"; return 0; fi
  fi
  local t0=$SECONDS
  go_env
  rm -rf "$BIN/.new"; mkdir -p "$BIN/.new"
  log "building Kubernetes $K8S_VERSION (${KUBE_BINS[*]}) ..."; build_kubernetes
  log "building etcd $ETCD_VERSION ..."; build_etcd
  log "building KubeRay operator $KUBERAY_VERSION ..."; build_kuberay
  log "building Prometheus $PROMETHEUS_VERSION ..."; build_prometheus
  log "building the pause image $PAUSE_IMAGE ..."; build_pause
  local f
  for f in "$BIN/.new"/*; do rm -rf "${BIN:?}/$(basename "$f")"; mv "$f" "$BIN/"; done
  rmdir "$BIN/.new"
  echo "$stamp" >"$BIN/.stamp"
  log "built in $((SECONDS - t0)) s into $BIN"
}

# ---------------------------------------------------------------------------------------------
# helpers for up/down
# ---------------------------------------------------------------------------------------------
RECORD="$CACHE/host-record"   # what the host looked like before `up`; consumed by `down`
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"
CTR_SOCK="$RUN/containerd.sock"
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Paths the kubelet, containerd and the CNI plugins use whatever their flags say.
HARDCODED_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns /etc/cni)

kc() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { ctr --address "$CTR_SOCK" --namespace k8s.io "$@"; }

pid_alive() {  # pid_alive NAME: the recorded process still runs and is the one we started
  local f="$RUN/$1.pid" pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  [[ -n $pid ]] && running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(cat "$RUN/$1.match" 2>/dev/null || echo "$1")"
}

start_bg() {  # start_bg NAME CMD...: own session and process group, log in $LOGS/NAME.log
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  printf '%s' "$1" >"$RUN/$name.match"
}

running() {  # running PID: exists and is not a zombie (our processes are reaped by whoever adopted them)
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

stop_bg() {  # stop_bg NAME [TIMEOUT]: TERM the process group, KILL what is left after TIMEOUT s
  local name=$1 timeout=${2:-10} pid i
  pid_alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  pid=$(cat "$RUN/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  for ((i = 0; i < 50; i++)); do running "$pid" || break; sleep 0.1; done
  rm -f "$RUN/$name.pid"
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s
  local limit=$1 what=$2 t0=$SECONDS; shift 2
  local f c
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || die "timed out after ${limit}s waiting for $what (logs: $LOGS)"
    for f in "$RUN"/*.pid; do
      [[ -f $f ]] || continue
      c=$(basename "$f" .pid)
      pid_alive "$c" || die "$c exited while waiting for $what: $(tail -n 1 "$LOGS/$c.log" 2>/dev/null | cut -c1-300) (log: $LOGS/$c.log)"
    done
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# PKI: a CA, the apiserver's serving certificate, one client certificate per component
# ---------------------------------------------------------------------------------------------
genkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }  # ECDSA: 10x faster than RSA

mk_cert() {  # mk_cert NAME SUBJECT [SAN] : key + certificate signed by the CA
  local name=$1 subj=$2 san=${3:-} ext="$PKI/$1.ext"
  genkey "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    if [[ -n $san ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

mk_kubeconfig() {  # mk_kubeconfig FILE CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: testbed
  context: {cluster: testbed, user: $2}
current-context: testbed
EOF
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  genkey "$PKI/ca.key"
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=raydask-testbed-ca" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
  mk_cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP,IP:127.0.0.1"
  mk_cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP"
  mk_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  mk_cert admin "/O=system:masters/CN=testbed-admin"
  mk_cert controller-manager "/CN=system:kube-controller-manager"
  mk_cert scheduler "/CN=system:kube-scheduler"
  mk_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  mk_cert kube-proxy "/CN=system:kube-proxy"
  genkey "$PKI/sa.key"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local c
  for c in admin controller-manager scheduler kubelet kube-proxy; do mk_kubeconfig "$STATE/$c.kubeconfig" "$c"; done
}

# ---------------------------------------------------------------------------------------------
# host record (for down)
# ---------------------------------------------------------------------------------------------
record_host() {
  [[ -f $RECORD ]] && return 0   # an earlier up that was never taken down holds the real originals
  local k v d
  {
    for k in "${SYSCTLS[@]}"; do
      v=$(sysctl -n "$k" 2>/dev/null | tr '\t' ' ') && echo "sysctl $k=$v"
    done
    for d in "${HARDCODED_DIRS[@]}"; do [[ -e $d ]] && echo "existed $d"; done
    for d in /sys/fs/cgroup/*/kubepods; do [[ -e $d ]] && echo "existed $d"; done
    ip netns list 2>/dev/null | awk '{print "netns " $1}'
    iptables-save 2>/dev/null | grep -qE '^:(KUBE-|CNI-)' && echo "foreign-kube-chains"
    if command -v nft >/dev/null && nft list tables 2>/dev/null | grep -q kube-proxy; then echo "foreign-nft"; fi
    echo "recorded $(date -u +%FT%TZ)"
  } >"$RECORD.tmp"
  mv "$RECORD.tmp" "$RECORD"
}

rec() { [[ -f $RECORD ]] && grep -qxF -- "$1" "$RECORD"; }

set_sysctl() { sysctl -qw "$1=$2" >/dev/null 2>&1 || log "warning: could not set $1=$2"; }

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------
write_configs() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/kubelet" "$STATE/dns"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$RUN/containerd-ttrpc.sock"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$STATE/cni/net.d/10-testbed.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "testbed",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  echo "nameserver $NODE_IP" >"$STATE/kubelet/resolv.conf"
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$CTR_SOCK
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $STATE/kubelet/resolv.conf
oomScoreAdj: 0
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "2%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
podPidsLimit: -1
volumeStatsAggPeriod: 0s
EOF
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # Service DNS: Services and headless EndpointSlices -> hosts file for dnsmasq. Two `kubectl get
  # --watch` trigger a refresh on every change; a full refresh also runs every RESYNC seconds.
  cat >"$STATE/dns/sync.sh" <<'EOF'
#!/usr/bin/env bash
# usage: sync.sh KUBECTL KUBECONFIG HOSTSFILE DNSMASQ_PIDFILE RESYNC_SECONDS
set -u
kubectl=$1 kubeconfig=$2 hosts=$3 pidfile=$4 resync=$5
tmpl='{{range .items}}{{if eq .kind "Service"}}S {{.metadata.namespace}} {{.metadata.name}} {{.spec.clusterIP}}{{"\n"}}{{else}}{{$ns := .metadata.namespace}}{{$svc := ""}}{{with .metadata.labels}}{{with index . "kubernetes.io/service-name"}}{{$svc = .}}{{end}}{{end}}{{range .endpoints}}E {{$ns}} {{$svc}} {{index .addresses 0}} {{or .hostname "-"}}{{"\n"}}{{end}}{{end}}{{end}}'
refresh() {
  local out new
  out=$("$kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s get services,endpointslices -A -o go-template="$tmpl" 2>/dev/null) || return 1
  new=$(awk '
    $1 == "S" && $4 != "None" { print $4, $3 "." $2 ".svc.cluster.local" }
    $1 == "S" && $4 == "None" { headless[$2 "/" $3] = 1 }
    $1 == "E" && $3 != ""     { ep[++n] = $0 }
    END { for (i = 1; i <= n; i++) { split(ep[i], f, " ")
            if (!((f[2] "/" f[3]) in headless)) continue
            line = f[4] " " f[3] "." f[2] ".svc.cluster.local"
            if (f[5] != "-") line = line " " f[5] "." f[3] "." f[2] ".svc.cluster.local"
            print line } }' <<<"$out" | sort)
  if [[ ! -f $hosts || $new != "$(cat "$hosts")" ]]; then
    printf '%s\n' "$new" >"$hosts.tmp" && mv "$hosts.tmp" "$hosts"
    [[ -f $pidfile ]] && kill -HUP "$(cat "$pidfile")" 2>/dev/null
  fi
  return 0
}
watch() {  # one line per change of $1; restarted when the apiserver ends the watch
  while :; do
    "$kubectl" --kubeconfig "$kubeconfig" get "$1" -A --watch -o name 2>/dev/null
    echo restart; sleep 1
  done
}
events=$(dirname "$hosts")/events
rm -f "$events"; mkfifo "$events"
exec 3<>"$events"
watch services >&3 &
watch endpointslices >&3 &
wait_s=$resync
while :; do
  if read -r -t "$wait_s" -u 3 _; then
    while read -r -t 0.2 -u 3 _; do :; done   # a burst of changes: one refresh
  fi
  if refresh; then wait_s=$resync; else wait_s=1; fi   # retry a failed refresh after 1 s
done
EOF
  chmod +x "$STATE/dns/sync.sh"
  : >"$STATE/dns/hosts"
}

setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  set_sysctl net.ipv4.ip_forward 1
  # Pod -> Service -> pod on the same bridge needs bridged traffic to pass iptables (kube-proxy's DNAT).
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || die "no bridge netfilter (br_netfilter) in this kernel"
  set_sysctl net.bridge.bridge-nf-call-iptables 1
  # Accept forwarding within and into the bridge even where FORWARD's policy is DROP (Docker
  # sets that). Nothing from a pod leaves the machine: pods reach each other, Services (already
  # DNATed to pod IPs by kube-proxy) and the node's own addresses (INPUT, not FORWARD); the rest
  # is refused at once. That includes a ClusterIP that kube-proxy has not programmed yet (the
  # first second of a new Service): routed by default, it went out to the host's gateway,
  # and the client's connect hung for its whole timeout (30 s for Dask) instead of failing fast
  # and retrying.
  iptables -N RDTB-FORWARD 2>/dev/null || iptables -F RDTB-FORWARD
  iptables -A RDTB-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A RDTB-FORWARD -i "$BRIDGE" -j REJECT --reject-with icmp-port-unreachable
  iptables -A RDTB-FORWARD -o "$BRIDGE" -j ACCEPT
  iptables -C FORWARD -j RDTB-FORWARD 2>/dev/null || iptables -I FORWARD 1 -j RDTB-FORWARD
  # The same for the node's own connections to ClusterIPs (filter OUTPUT sees them after
  # kube-proxy's DNAT, so only unprogrammed ones match).
  iptables -N RDTB-OUTPUT 2>/dev/null || iptables -F RDTB-OUTPUT
  iptables -A RDTB-OUTPUT -d "$SERVICE_CIDR" -j REJECT --reject-with icmp-port-unreachable
  iptables -C OUTPUT -j RDTB-OUTPUT 2>/dev/null || iptables -I OUTPUT 1 -j RDTB-OUTPUT
}

cmd_up() {
  need_root up
  local b
  for b in "${KUBE_BINS[@]}" etcd pause.tar; do
    [[ -e $BIN/$b ]] || die "$BIN/$b missing: run 'scripts/cluster.sh build' first"
  done
  ensure_packages containerd runc ctr iptables ip ss dnsmasq openssl findmnt setsid sysctl cni
  [[ $(stat -fc %T /sys/fs/cgroup) == tmpfs || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no cgroup filesystem"
  if pid_alive etcd || pid_alive kube-apiserver || pid_alive kubelet; then
    die "a cluster is already up (scripts/cluster.sh down first)"
  fi
  ((${#RUN} + 25 < 108)) || die "TESTBED_CLUSTER_CACHE is too long a path for unix sockets: $RUN"
  local port busy=()
  for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" 10248 10249 10250 10256 10257 10259; do
    [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]] && busy+=("$port")
  done
  [[ ${#busy[@]} -eq 0 ]] || die "TCP port(s) ${busy[*]} already in use (the cluster needs them free)"
  if [[ -f $RECORD ]]; then log "leftovers of an earlier cluster: taking it down first"; cmd_down >/dev/null; fi
  local t0; t0=$(date +%s.%N)
  # A failed start leaves nothing running: take it down again (the logs stay in $LOGS).
  trap 'rc=$?; if ((rc != 0)); then log "up failed: taking the partial cluster down (logs: $LOGS)"; cmd_down >/dev/null 2>&1 || true; fi' EXIT
  record_host
  rm -rf "$STATE"; mkdir -p "$RUN" "$LOGS" "$STATE/etcd"; chmod 700 "$STATE"
  make_pki
  write_configs
  setup_network

  start_bg etcd "$BIN/etcd" --name testbed --data-dir "$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
  start_bg containerd containerd --config "$STATE/containerd/config.toml"

  start_bg kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" --endpoint-reconciler-type=lease \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement \
    --allow-privileged=true --profiling=false --v=1

  # containerd is up long before the apiserver: import the pause image now, before the kubelet.
  wait_for 30 containerd ctr_ version
  ctr_ images import "$BIN/pause.tar" >/dev/null || die "importing the pause image failed"
  start_bg dnsmasq dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-negcache --local-ttl=1 \
    --bind-interfaces --listen-address="$NODE_IP" --addn-hosts="$STATE/dns/hosts" \
    --local=/cluster.local/ --pid-file="$RUN/dnsmasq.pidfile" --user=root --log-facility=-

  wait_for 60 "kube-apiserver /readyz" kc get --raw /readyz
  start_bg kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cluster-name=testbed --profiling=false --v=1
  start_bg kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
  start_bg kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet/root" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --pod-infra-container-image="$PAUSE_IMAGE" --v=1
  start_bg kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml"
  start_bg dns-sync "$STATE/dns/sync.sh" "$BIN/kubectl" "$ADMIN_KUBECONFIG" "$STATE/dns/hosts" "$RUN/dnsmasq.pidfile" \
    "${TESTBED_CLUSTER_DNS_RESYNC:-30}"
  printf '%s' "$STATE/dns/sync.sh" >"$RUN/dns-sync.match"

  wait_for 90 "node $NODE_NAME Ready" node_ready
  wait_for 60 "the default ServiceAccount" kc -n default get serviceaccount default
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || die "$c exited during start-up (log: $LOGS/$c.log)"; done
  trap - EXIT
  log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
  echo "$ADMIN_KUBECONFIG"
}

node_ready() {
  [[ $(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------
kill_cgroup_procs() {  # SIGKILL every process in the kubelet's pod cgroups
  local f pid
  for f in /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs; do
    [[ -f $f ]] || continue
    # A pod's cgroup may vanish between the test and the read: skip it.
    { while read -r pid; do [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; done <"$f"; } \
      2>/dev/null || true
  done
  return 0
}

clean_iptables() {  # remove our chains (and the KUBE-/CNI- ones of this cluster) and every jump to them
  local ipt=$1 pat=$2 table rules script
  command -v "$ipt-save" >/dev/null || return 0
  for table in filter nat mangle raw; do
    rules=$("$ipt-save" -t "$table" 2>/dev/null) || continue
    grep -qE "^:($pat)" <<<"$rules" || continue
    script="*$table"$'\n'
    script+=$({ grep -E "^-A .* -j ($pat)" <<<"$rules" || true; } | { grep -vE "^-A ($pat)" || true; } | sed 's/^-A /-D /')$'\n'
    script+=$({ grep -oE "^:($pat)[^ ]*" <<<"$rules" || true; } | sed 's/^:/-F /')$'\n'
    script+=$({ grep -oE "^:($pat)[^ ]*" <<<"$rules" || true; } | sed 's/^:/-X /')$'\n'
    script+="COMMIT"$'\n'
    grep -v '^$' <<<"$script" | "$ipt-restore" --noflush || log "warning: could not clean $ipt table $table"
  done
}

cmd_down() {
  need_root down
  local c m d line k v
  stop_bg kuberay-operator 5; stop_bg dns-sync 3; stop_bg dnsmasq 3
  stop_bg kubelet 10; stop_bg kube-proxy 5
  kill_cgroup_procs
  if pid_alive containerd; then
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop_bg containerd 10
  # containerd's shims outlive it: end the ones that belong to this cluster (by their own pid).
  local p
  for p in $(pgrep -f containerd-shim 2>/dev/null || true); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$CTR_SOCK" && kill -KILL "$p" 2>/dev/null
  done
  stop_bg kube-scheduler 5; stop_bg kube-controller-manager 5; stop_bg kube-apiserver 10; stop_bg etcd 10
  kill_cgroup_procs

  # Mounts: the kubelet's volumes, containerd's rootfs/shm, pod network namespaces.
  local mounts
  mounts=$(findmnt -rn -o TARGET | grep -E "^($STATE|/run/containerd|/var/lib/kubelet|/run/netns/cni-|/var/run/netns/cni-)" | sort -r || true)
  for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"; done
  for m in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    rec "netns $m" || ip netns delete "$m" 2>/dev/null || true
  done

  # cgroups the kubelet made (cgroupfs driver)
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d $d ]] || continue
    rec "existed $d" && continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "warning: cannot remove cgroup $d"
  done

  # iptables: our FORWARD chain always; KUBE-*/CNI-* unless they were there before the first up.
  clean_iptables iptables 'RDTB-'
  if [[ -f $RECORD ]] && ! rec foreign-kube-chains; then
    clean_iptables iptables 'KUBE-|CNI-'; clean_iptables ip6tables 'KUBE-|CNI-'
  fi
  if [[ -f $RECORD ]] && ! rec foreign-nft && command -v nft >/dev/null; then
    nft delete table ip kube-proxy 2>/dev/null || true; nft delete table ip6 kube-proxy 2>/dev/null || true
  fi

  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" || log "warning: cannot delete $BRIDGE"; fi
  for m in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip -d link show "$m" 2>/dev/null | grep -q "master $BRIDGE" && ip link delete "$m" 2>/dev/null
  done

  if [[ -f $RECORD ]]; then
    while IFS= read -r line; do
      [[ $line == sysctl\ * ]] || continue
      line=${line#sysctl }; k=${line%%=*}; v=${line#*=}
      [[ $(sysctl -n "$k" 2>/dev/null | tr '\t' ' ') == "$v" ]] || set_sysctl "$k" "$v"
    done <"$RECORD"
    for d in "${HARDCODED_DIRS[@]}"; do
      [[ -e $d ]] || continue
      rec "existed $d" && continue
      findmnt -rn -o TARGET | grep -q "^$d" && { log "warning: $d still has mounts; left in place"; continue; }
      rm -rf "$d"
    done
    rm -f "$RECORD"
  fi
  # Keep the logs for a post-mortem; drop the rest of the state (etcd data, images, keys).
  if [[ -d $STATE ]] && ! findmnt -rn -o TARGET | grep -q "^$STATE"; then
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  fi
  log "down"
}

# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------
cmd_status() {
  local c pid rss total=0 any=0
  for c in "${COMPONENTS[@]}" kuberay-operator; do
    if [[ $c == kuberay-operator ]] && ! pid_alive "$c"; then continue; fi
    if pid_alive "$c"; then
      any=1; pid=$(cat "$RUN/$c.pid")
      rss=$(ps -o rss= -g "$pid" 2>/dev/null | awk '{s += $1} END {printf "%d", s / 1024}')  # the whole process group
      total=$((total + rss))
      printf '%-24s running  pid %-7s %5s MiB\n' "$c" "$pid" "$rss"
    else
      printf '%-24s stopped\n' "$c"
    fi
  done
  if [[ $any == 1 ]]; then
    local ready=no
    node_ready && ready=yes
    printf '%-24s %s\n' "node $NODE_NAME" "Ready=$ready"
    printf '%-24s %s MiB (components, without shims and pods)\n' total "$total"
    printf '%-24s %s\n' kubeconfig "$ADMIN_KUBECONFIG"
  fi
}

cmd_kuberay() {  # start the KubeRay operator (CRDs, RBAC, its own identity) on the running cluster
  need_root kuberay
  ensure_packages curl
  pid_alive kube-apiserver || die "the cluster is not up (scripts/cluster.sh up)"
  [[ -x $BIN/kuberay-operator && -f $BIN/kuberay/role.yaml ]] || die "no KubeRay operator in $BIN: run 'scripts/cluster.sh build'"
  if pid_alive kuberay-operator; then log "KubeRay operator already running"; return 0; fi
  if [[ ! -f $STATE/kuberay-operator.kubeconfig ]]; then
    mk_cert kuberay-operator "/CN=kuberay-operator"
    mk_kubeconfig "$STATE/kuberay-operator.kubeconfig" kuberay-operator
  fi
  # The CRDs are too large for client-side apply (last-applied annotation > 256 KiB).
  kc apply --server-side --force-conflicts -f "$BIN/kuberay/crd/" >/dev/null || die "installing the KubeRay CRDs failed"
  kc apply --server-side --force-conflicts -f "$BIN/kuberay/role.yaml" >/dev/null || die "installing the KubeRay ClusterRole failed"
  kc create clusterrolebinding kuberay-operator --clusterrole=kuberay-operator --user=kuberay-operator \
    --dry-run=client -o yaml | kc apply --server-side --force-conflicts -f - >/dev/null
  kc wait --for=condition=Established --timeout=60s -f "$BIN/kuberay/crd/" >/dev/null || die "the KubeRay CRDs did not become Established"
  # The operator runs on the node, not in a pod: it cannot resolve the cluster's Service names,
  # and it reads every RayJob's status from the head's dashboard at
  # <head-svc>.<ns>.svc.cluster.local:8265 (utils.FetchHeadServiceURL). With
  # --use-kubernetes-proxy it goes through the API server's services/proxy instead (its
  # ClusterRole grants services/proxy; the token travels in x-ray-authorization, which the
  # proxy passes on).
  start_bg kuberay-operator env KUBECONFIG="$STATE/kuberay-operator.kubeconfig" "$BIN/kuberay-operator" \
    --metrics-addr=0 --health-probe-bind-address=127.0.0.1:18082 --enable-leader-election=false \
    --use-kubernetes-proxy --log-stdout-encoder=console
  printf '%s' "$BIN/kuberay-operator" >"$RUN/kuberay-operator.match"
  wait_for 60 "the KubeRay operator's readiness probe" curl -fsS http://127.0.0.1:18082/readyz
  log "KubeRay operator $KUBERAY_VERSION running (log: $LOGS/kuberay-operator.log)"
}

cmd_import() {  # import TARBALL...: docker-archive/OCI tarballs into the cluster's containerd
  # "-" reads one from standard input (`docker save IMAGE... | scripts/cluster.sh import -`:
  # no tarball on disk).
  [[ $# -gt 0 ]] || die "usage: $0 import TARBALL... (- for standard input)"
  pid_alive containerd || die "the cluster is not up"
  local f
  for f in "$@"; do
    [[ $f == - || -f $f ]] || die "no such file: $f"
    ctr_ images import "$f" >/dev/null || die "importing ${f/#-/standard input} failed"
  done
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    import) cmd_import "$@" ;;
    kuberay) cmd_kuberay ;;
    *) die "usage: $0 build|up|down|status|kuberay|import TARBALL...|-" ;;
  esac
}
main "$@"; exit $?
