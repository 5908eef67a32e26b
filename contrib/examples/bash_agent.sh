#!/usr/bin/env bash
# A shell agent built on `agh agent …`: claims runs one at a time and runs
# COMMAND for each, with the run's input (JSON) in $AGH_INPUT. Exit status 0
# completes the run with {"exit_status": 0}; anything else fails it. The
# command's output goes to the run's log (`agh logs RUN`). SIGTERM or Ctrl-C
# gives the run back to the queue and exits 0. Each finish also claims the
# next run (`--next`, one round trip per run), so the loop claims on its own
# only when a finish found nothing.
#
#   bash_agent.sh [-n NAME] [-c CHANNEL] [-l LEASE_SECONDS] -- COMMAND [ARG...]
#   bash_agent.sh -n greeter -- sh -c 'echo "hello, $AGH_INPUT"'
#
# The command also sees AGH_RUN_ID, AGH_CLAIM_TOKEN and AGH_SESSION_ID, so it
# may call `agh agent log` or `agh agent ask` itself. $AGH is the agh command
# (default: agh), e.g. AGH="python -m agh.cli --socket /tmp/x/agh.sock".
#
# While it waits for work, a signal to the script alone takes effect when
# the claim's wait (up to 30 s) ends; Ctrl-C and systemd signal the whole
# process group, which ends the wait at once.
set -u

usage() { echo "usage: $0 [-n NAME] [-c CHANNEL] [-l LEASE_SECONDS] -- COMMAND [ARG...]" >&2; }

name=bash-agent channel='' lease=60
while getopts n:c:l: opt; do
	case $opt in
	n) name=$OPTARG ;;
	c) channel=$OPTARG ;;
	l) lease=$OPTARG ;;
	*) usage && exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { usage && exit 2; }

read -r -a agh_cmd <<<"${AGH:-agh}"
# `command`: run the program named agh, not this function again.
agh() { command "${agh_cmd[@]}" "$@"; }

# Three beats per lease, so two can be missed before it runs out.
beat=$((lease / 3 > 0 ? lease / 3 : 1))
claim_args=(agent claim --name "$name" --wait 30 --lease "$lease" --env)
# What a finish claims next: the same as a claim, for the same session.
next_args=(--next --wait 30 --lease "$lease" --env)
[ -n "$channel" ] && claim_args+=(--channel "$channel") && next_args+=(--channel "$channel")

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
# The trap only takes note: the loop acts on it at the next safe point, so
# a run claimed just as the signal came is released rather than forgotten.
stopping=''
trap 'stopping=1' TERM INT

release() {
	# Another agent can take the run now, instead of once the lease is out.
	agh agent release --reason "$name stopped" >/dev/null
}

heartbeat() { # PID: the command, stopped when the run is no longer ours
	# Killed by work(): take the pending sleep along, or it lingers.
	trap 'kill "$nap" 2>/dev/null; exit 0' TERM
	while :; do
		sleep "$beat" &
		nap=$!
		wait "$nap"
		# Refused (lease lost: canceled, expired, taken over): that is final.
		agh agent heartbeat >/dev/null || { kill "$1" 2>/dev/null; exit 1; }
	done
}

work() {
	# In the background, because bash runs a trap only once the foreground
	# command is done, and `wait` is what a signal interrupts.
	"$@" >"$out" 2>&1 &
	child=$!
	heartbeat "$child" &
	beater=$!
	wait "$child"
	status=$?
	[ -n "$stopping" ] && kill "$child" 2>/dev/null
	kill "$beater" && wait "$beater"
	[ -n "$stopping" ] && { release; exit 0; }
	# Logged after the command exits, so no line can arrive after the finish.
	[ -s "$out" ] && agh agent log --stdin <"$out"
	# The finish prints the next claim's `export` lines, as a claim does.
	if [ "$status" -eq 0 ]; then
		claimed=$(agh agent complete --result '{"exit_status": 0}' "${next_args[@]}")
	else
		last=$(tail -n 1 "$out")
		claimed=$(agh agent fail --error "exit status $status${last:+: $last}" "${next_args[@]}")
	fi
	finished=$?
	case $finished in
	0) ;;            # finished, and the next run is ours
	6) claimed='' ;; # finished; nothing to claim within --wait
	*)
		claimed=''
		return "$finished"
		;;
	esac
}

backoff=1
claimed='' # the `export` lines of a run in hand, when the last finish claimed one
while [ -z "$stopping" ]; do
	# Not eval "$(…)" alone: that hides the claim's exit status.
	[ -n "$claimed" ] || claimed=$(agh "${claim_args[@]}") || {
		status=$?
		case $status in
		6) continue ;; # nothing within --wait: ask again
		69)            # aghd is down, maybe restarting: wait a little longer each time
			sleep "$backoff"
			backoff=$((backoff < 8 ? backoff * 2 : 10))
			continue
			;;
		*)
			[ -n "$stopping" ] && break # the claim was interrupted with us
			echo "$0: claim failed (exit status $status)" >&2
			exit "$status"
			;;
		esac
	}
	backoff=1
	eval "$claimed"
	claimed=''
	[ -n "$stopping" ] && { release; break; }
	work "$@" || echo "$0: could not finish run $AGH_RUN_ID" >&2
done
# Stopped while a finish was claiming the next run: give that one back too.
[ -n "$claimed" ] && eval "$claimed" && release
exit 0
