#!/usr/bin/env bash
# A real Slurm cluster on this one host, on loopback, for tests and local trials (docs/slurm_local.md).
#
#   local_cluster.sh install [--no-accounting]
#       apt-get Debian's slurmctld, slurmd, slurm-client and (for sacct) slurmdbd + MariaDB; idempotent.
#   local_cluster.sh start DIR [--nodes N] [--cpus C] [--no-accounting]
#       write DIR/slurm.conf (+ slurmdbd.conf, cgroup.conf), start the daemons, wait until every node
#       is idle, print `export SLURM_CONF=DIR/slurm.conf`. N > 1 runs N slurmd (nodes n1..nN) on
#       this host, so `--nodes 2` jobs work; C CPUs per node (default: this host's; more oversubscribes).
#   local_cluster.sh stop DIR       cancel the jobs, stop every daemon of DIR (and their job steps)
#   local_cluster.sh status DIR     daemons, sinfo, squeue; exit 0 only when all nodes respond
#
# Everything of a cluster (configs, state, spool, database, logs, pid files) lives under DIR; nothing
# in /etc is read or written, and several clusters can run side by side (each picks free ports).
set -euo pipefail

readonly CORE_PACKAGES=(slurmctld slurmd slurm-client)
readonly ACCOUNTING_PACKAGES=(slurmdbd slurm-wlm-mysql-plugin mariadb-server-core mariadb-client-core)
readonly START_TIMEOUT_S="${NAVILA_SLURM_START_TIMEOUT:-60}"
readonly PLUGIN_DIR=/usr/lib/x86_64-linux-gnu/slurm-wlm
readonly DB_USER=slurm DB_PASS=slurm

die() { echo "local_cluster.sh: $*" >&2; exit 1; }
note() { echo "local_cluster.sh: $*" >&2; }

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

have_core() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; }

have_accounting() {
  command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null &&
    command -v mariadb >/dev/null && command -v sacct >/dev/null &&
    { [ -e "$PLUGIN_DIR/accounting_storage_mysql.so" ] || [ ! -d "$PLUGIN_DIR" ]; }
}

slurm_version() { slurmd -V 2>/dev/null | awk '{print $2}'; }

cmd_install() {
  local accounting=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-accounting) accounting=0; shift ;;
      *) die "install: unknown option '$1' (known: --no-accounting)" ;;
    esac
  done
  local packages=("${CORE_PACKAGES[@]}")
  [ "$accounting" -eq 1 ] && packages+=("${ACCOUNTING_PACKAGES[@]}")
  if have_core && { [ "$accounting" -eq 0 ] || have_accounting; }; then
    note "Slurm $(slurm_version) already installed"
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "install needs root for apt-get; run it as root or install sudo"
    sudo=(sudo)
  fi
  # The packages' postinst scripts would start munge/slurm* with /etc/slurm; a policy-rc.d that denies
  # every start keeps them off (this script's daemons use configs under DIR). Only ours is removed.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
    # shellcheck disable=SC2064  # expand now: the trap runs after this function's locals are gone
    trap "${sudo[*]} rm -f '$policy'" EXIT
  fi
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)
  local start=$SECONDS rc=0
  # A fresh machine's package lists may be missing or stale: update only when the install needs it.
  if ! "${apt[@]}" install --no-install-recommends "${packages[@]}"; then
    note "apt-get install failed with the current package lists; running apt-get update"
    { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${packages[@]}"; } || rc=$?
  fi
  if [ "$made_policy" -eq 1 ]; then "${sudo[@]}" rm -f "$policy"; trap - EXIT; fi
  [ "$rc" -eq 0 ] || die "apt-get install ${packages[*]} failed (exit $rc); see the apt-get output above"
  have_core || die "apt-get installed ${CORE_PACKAGES[*]} but slurmctld/slurmd/sbatch are not on PATH"
  note "installed Slurm $(slurm_version) (${packages[*]}) in $((SECONDS - start)) s"
}

free_ports() {  # print N distinct free TCP ports of 127.0.0.1
  "$(command -v /usr/bin/python3 || command -v python3)" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

read_pid() { cat "$1" 2>/dev/null || true; }

# Every process started for a cluster carries NAVILA_SLURM_DIR=DIR in its environment (slurmstepd
# inherits slurmd's), so `stop` ends exactly those, by id.
marked_pids() {
  local dir=$1 p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if grep -qzxF "NAVILA_SLURM_DIR=$dir" "$p/environ" 2>/dev/null; then echo "${p#/proc/}"; fi
  done
}

launch() {  # launch NAME ARGV...: run a daemon in the foreground of its own session, in the background
  local dir=$1 name=$2
  shift 2
  setsid env "SLURM_CONF=$dir/slurm.conf" "NAVILA_SLURM_DIR=$dir" "$@" \
    </dev/null >"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/run/$name.launcher.pid"
}

write_slurm_conf() {
  local dir=$1 nodes=$2 cpus=$3 host=$4 mem=$5 accounting=$6 ctld_port=$7 dbd_port=$8
  shift 8
  local ports=("$@") names=() i
  for ((i = 1; i <= nodes; i++)); do
    if [ "$nodes" -eq 1 ]; then names+=("$host"); else names+=("n$i"); fi
  done
  printf '%s\n' "${names[@]}" >"$dir/nodes"
  local user
  user=$(id -un)
  {
    echo "# Written by scripts/slurm/local_cluster.sh; each setting is explained in docs/slurm_local.md."
    echo "ClusterName=navila"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$ctld_port"
    echo "SlurmUser=$user"
    echo "SlurmdUser=$user"
    echo "AuthType=auth/none"
    echo "CredType=cred/none"
    echo "StateSaveLocation=$dir/state"
    echo "SlurmdSpoolDir=$dir/spool/%n"
    echo "SlurmctldPidFile=$dir/run/slurmctld.pid"
    echo "SlurmdPidFile=$dir/run/slurmd-%n.pid"
    echo "SlurmctldLogFile=$dir/log/slurmctld.log"
    echo "SlurmdLogFile=$dir/log/slurmd-%n.log"
    echo "SlurmctldDebug=info"
    echo "SlurmdDebug=info"
    if [ "$accounting" -eq 1 ]; then
      echo "AccountingStorageType=accounting_storage/slurmdbd"
      echo "AccountingStorageHost=127.0.0.1"
      echo "AccountingStoragePort=$dbd_port"
    else
      echo "AccountingStorageType=accounting_storage/none"
    fi
    echo "JobCompType=jobcomp/filetxt"
    echo "JobCompLoc=$dir/log/jobcomp.txt"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "MpiDefault=none"
    echo "MailProg=/bin/true"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=sched_interval=5,bf_interval=1,batch_sched_delay=0"
    echo "DependencyParameters=kill_invalid_depend"
    echo "ReturnToService=2"
    echo "SlurmdParameters=config_overrides"
    echo "KillWait=5"
    echo "MinJobAge=3600"
    echo "InactiveLimit=0"
    for ((i = 0; i < nodes; i++)); do
      echo "NodeName=${names[$i]} NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[$i]} CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP"
  } >"$dir/slurm.conf.tmp"
  mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
  # Not read while TaskPlugin/ProctrackType are not cgroup ones; written so that switching to
  # task/cgroup (which works here with this file) does not constrain or probe anything.
  printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' \
    >"$dir/cgroup.conf"
  : >"$dir/plugstack.conf"
  printf 'export SLURM_CONF=%s\n' "$dir/slurm.conf" >"$dir/env.sh"
}

write_slurmdbd_conf() {
  local dir=$1 dbd_port=$2 db_port=$3
  {
    echo "# Written by scripts/slurm/local_cluster.sh; see docs/slurm_local.md."
    echo "AuthType=auth/none"
    echo "DbdHost=localhost"
    echo "DbdAddr=127.0.0.1"
    echo "DbdPort=$dbd_port"
    echo "SlurmUser=$(id -un)"
    echo "LogFile=$dir/log/slurmdbd.log"
    echo "PidFile=$dir/run/slurmdbd.pid"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$db_port"
    echo "StorageUser=$DB_USER"
    echo "StoragePass=$DB_PASS"
    echo "StorageLoc=slurm_acct_db"
  } >"$dir/slurmdbd.conf.tmp"
  chmod 600 "$dir/slurmdbd.conf.tmp"  # slurmdbd refuses a world-readable slurmdbd.conf
  mv "$dir/slurmdbd.conf.tmp" "$dir/slurmdbd.conf"
}

# MariaDB options: small InnoDB files (fast init, 26 MB), no native AIO (io_uring/libaio are not
# available in every sandbox), TCP on loopback only, no DNS.
mariadb_opts() {
  local dir=$1
  echo "--no-defaults --datadir=$dir/db --user=$(id -un) --skip-name-resolve --innodb-use-native-aio=0"
  echo "--innodb-log-file-size=8M --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900"
}

show_logs() {  # show_logs DIR [NAME]: the last lines of NAME's logs, or of every log
  local dir=$1 f files=()
  if [ -n "${2:-}" ]; then files=("$dir/log/$2".*); else files=("$dir"/log/*); fi
  for f in "${files[@]}"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f" >&2
    grep -v -E 'mpi/pmix|MPI: Cannot create context' "$f" | tail -n 12 >&2 || true
  done
}

last_error() {  # the last error/fatal line NAME logged, for the one-line failure message
  grep -h -E 'error|fatal|ERROR' "$1/log/$2".* 2>/dev/null | grep -v -E 'mpi/pmix|MPI: Cannot' | tail -n 1 || true
}

fail_start() {  # fail_start DIR MESSAGE [NAME]
  local dir=$1 msg=$2 name=${3:-} err=""
  show_logs "$dir" "$name"
  [ -n "$name" ] && err=$(last_error "$dir" "$name")
  cmd_stop "$dir" >/dev/null 2>&1 || true
  die "start: $msg${err:+: $err} (logs above, all in $dir/log)"
}

wait_for() {  # wait_for DIR WHAT LAUNCHER_NAMES... -- COMMAND...: poll COMMAND until it succeeds
  local dir=$1 what=$2
  shift 2
  local names=()
  while [ "$1" != "--" ]; do names+=("$1"); shift; done
  shift
  local deadline=$((SECONDS + START_TIMEOUT_S)) name
  until "$@" >/dev/null 2>&1; do
    for name in "${names[@]}"; do
      pid_alive "$(read_pid "$dir/run/$name.launcher.pid")" || fail_start "$dir" "$name exited before $what" "$name"
    done
    [ $SECONDS -lt $deadline ] || fail_start "$dir" "$what: not reached after ${START_TIMEOUT_S} s (nodes: $(node_states "$dir"))"
    sleep 0.3
  done
}

node_states() {
  SLURM_CONF="$1/slurm.conf" timeout 10 sinfo -h -N -o '%N=%t(%E)' 2>&1 | tr '\n' ' ' || true
}

all_nodes() {  # all_nodes DIR REGEX: every node's sinfo state matches REGEX
  local dir=$1 states
  states=$(SLURM_CONF="$dir/slurm.conf" timeout 10 sinfo -h -N -p debug -o '%t' 2>/dev/null) || return 1
  [ "$(grep -c -E "^($2)\$" <<<"$states")" -eq "$(wc -l <"$dir/nodes")" ]
}

start_database() {
  local dir=$1 db_port=$2
  mkdir -p "$dir/db"
  # shellcheck disable=SC2046  # mariadb_opts is a list of words
  mariadb-install-db $(mariadb_opts "$dir") --skip-test-db --auth-root-authentication-method=socket \
    >"$dir/log/mariadb-install-db.out" 2>&1 || fail_start "$dir" "mariadb-install-db failed" mariadb-install-db
  # shellcheck disable=SC2046
  launch "$dir" mariadbd mariadbd $(mariadb_opts "$dir") --socket="$dir/run/mysqld.sock" \
    --port="$db_port" --bind-address=127.0.0.1 --pid-file="$dir/run/mariadbd.pid" \
    --log-error="$dir/log/mariadbd.err"
  local sql=(mariadb --no-defaults --socket="$dir/run/mysqld.sock" -u root)
  wait_for "$dir" "MariaDB answering" mariadbd -- "${sql[@]}" -e 'SELECT 1'
  "${sql[@]}" -e "CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
                  GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';" \
    || fail_start "$dir" "could not create the MariaDB user $DB_USER" mariadbd
}

cmd_start() {
  [ $# -ge 1 ] || usage
  local dir nodes=1 cpus="" accounting=auto
  dir=$(realpath -m "$1")
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
      --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
      --no-accounting) accounting=0; shift ;;
      --accounting) accounting=1; shift ;;
      *) die "start: unknown option '$1' (known: --nodes N, --cpus C, --accounting, --no-accounting)" ;;
    esac
  done
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "start: --nodes must be a positive integer, got '$nodes'"
  have_core || die "slurmctld/slurmd/sbatch not found; run: $0 install"
  if [ "$accounting" = auto ]; then
    if have_accounting; then accounting=1; else
      accounting=0
      note "slurmdbd/MariaDB not installed: no accounting, so sacct fails and submitit cannot see a job" \
        "that died without a result (it waits forever); run '$0 install' to add them"
    fi
  elif [ "$accounting" -eq 1 ]; then
    have_accounting || die "start --accounting: slurmdbd/MariaDB not installed; run: $0 install"
  fi
  if [ -f "$dir/slurm.conf" ] && cmd_status "$dir" >/dev/null 2>&1; then
    note "the cluster in $dir is already running"
    echo "export SLURM_CONF=$dir/slurm.conf"
    return 0
  fi
  # slurmd's unix sockets live in SlurmdSpoolDir/<node>/ (sun_path holds 108 bytes)
  [ ${#dir} -le 60 ] || die "start: DIR '$dir' has ${#dir} characters; use one of at most 60 (slurmd's unix sockets live under it)"
  mkdir -p "$dir"
  local host hw mem
  host=$(hostname -s)
  hw=$(slurmd -C 2>/dev/null | head -n 1)
  [ -n "$cpus" ] || cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$cpus" ] || cpus=$(nproc)
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "start: --cpus must be a positive integer, got '$cpus'"
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(( ${mem:-2048} / nodes ))
  local ports
  read -r -a ports <<<"$(free_ports $((nodes + 3)))"
  local ctld_port=${ports[0]} dbd_port=${ports[1]} db_port=${ports[2]}
  rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/db"
  mkdir -p "$dir/state" "$dir/run" "$dir/log"
  write_slurm_conf "$dir" "$nodes" "$cpus" "$host" "$mem" "$accounting" "$ctld_port" "$dbd_port" "${ports[@]:3}"
  local name
  while read -r name; do mkdir -p "$dir/spool/$name"; done <"$dir/nodes"
  local client=(env "SLURM_CONF=$dir/slurm.conf")

  local daemons=()
  if [ "$accounting" -eq 1 ]; then
    write_slurmdbd_conf "$dir" "$dbd_port" "$db_port"
    start_database "$dir" "$db_port"
    daemons+=(mariadbd)
    launch "$dir" slurmdbd slurmdbd -D
    daemons+=(slurmdbd)
    wait_for "$dir" "slurmdbd answering" "${daemons[@]}" -- "${client[@]}" timeout 10 sacctmgr -n list cluster
  fi
  # -i: ignore the state files a fresh DIR does not have
  launch "$dir" slurmctld slurmctld -D -i -f "$dir/slurm.conf"
  daemons+=(slurmctld)
  while read -r name; do
    launch "$dir" "slurmd-$name" slurmd -D -N "$name" -f "$dir/slurm.conf"
    daemons+=("slurmd-$name")
  done <"$dir/nodes"
  wait_for "$dir" "every node idle" "${daemons[@]}" -- all_nodes "$dir" idle
  local acct=without
  [ "$accounting" -eq 1 ] && acct=with
  note "Slurm $(slurm_version) up in $dir: partition debug, $nodes node(s) x $cpus CPU(s), $acct accounting"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

stop_pids() {  # TERM, wait up to 10 s, KILL
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i pid left
  for ((i = 0; i < 40; i++)); do
    left=0
    for pid in "$@"; do pid_alive "$pid" && left=1; done
    [ $left -eq 0 ] && return 0
    sleep 0.25
  done
  for pid in "$@"; do pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  return 0
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  [ -d "$1" ] || { note "$1 does not exist; nothing to stop"; return 0; }
  local dir i
  dir=$(cd "$1" && pwd -P)
  if [ -f "$dir/slurm.conf" ] && pid_alive "$(read_pid "$dir/run/slurmctld.launcher.pid")"; then
    # Cancel first, so that slurmstepd ends the jobs' processes.
    SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --quiet --full --partition debug 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
      [ -z "$(SLURM_CONF="$dir/slurm.conf" timeout 5 squeue -h -t R,CG,S 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  # slurmd and slurmctld, then slurmdbd, then the database, so that each can flush to the next.
  local group name names f pids
  for group in 'slurmd-* slurmctld' slurmdbd mariadbd; do
    pids=()
    read -r -a names <<<"$group"  # split without globbing
    for name in "${names[@]}"; do
      for f in "$dir"/run/$name.launcher.pid; do
        [ -f "$f" ] && pid_alive "$(read_pid "$f")" && pids+=("$(read_pid "$f")")
      done
    done
    stop_pids "${pids[@]}"
  done
  read -r -a pids <<<"$(marked_pids "$dir" | tr '\n' ' ')"
  stop_pids "${pids[@]}"
  rm -f "$dir"/run/*.pid
  note "stopped the cluster in $dir"
}

cmd_status() {
  [ $# -eq 1 ] || usage
  [ -f "$1/slurm.conf" ] || { note "no cluster in $1 (no slurm.conf)"; return 1; }
  local dir up=0 f pid
  dir=$(cd "$1" && pwd -P)
  for f in "$dir"/run/*.launcher.pid; do
    [ -f "$f" ] || { up=1; echo "no daemon was started"; continue; }
    pid=$(read_pid "$f")
    if pid_alive "$pid"; then echo "$(basename "$f" .launcher.pid): running (pid $pid)"
    else echo "$(basename "$f" .launcher.pid): not running"; up=1; fi
  done
  echo "export SLURM_CONF=$dir/slurm.conf"
  SLURM_CONF="$dir/slurm.conf" timeout 10 sinfo -N -o '%N %P %t %c' || up=1
  SLURM_CONF="$dir/slurm.conf" timeout 10 squeue || up=1
  [ $up -eq 0 ] && all_nodes "$dir" 'idle|mix|alloc'
}

main() {
  [ $# -ge 1 ] || usage
  local cmd=$1
  shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (install, start DIR, stop DIR, status DIR)" ;;
  esac
}

main "$@"
