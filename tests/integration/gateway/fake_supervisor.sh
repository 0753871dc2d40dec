#!/bin/bash
# Stands in for the OpenShell supervisor (/opt/openshell/bin/openshell-sandbox): it records
# what the driver gave it, as key=value lines in /sandbox/report.txt, then waits like the real
# one. It never prints the token itself, only its SHA-256 and whether it matches
# $EXPECTED_TOKEN_SHA256 (which the test sets through the user environment). With
# $RELAY_BULK_BYTES set it also sends and receives that many bytes through the gateway relay.
report=/sandbox/report.txt
: >"$report"
say() { printf '%s=%s\n' "$1" "$2" >>"$report"; }
# "yes" when FILE can be opened for writing, else "no".
writable() { if (: >>"$1") 2>/dev/null; then echo yes; else echo no; fi; }
# The file system type of the mount at DIR.
fstype() {
  awk -v d="$1" '$5 == d { for (i = 6; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' \
    /proc/self/mountinfo
}

say argc "$#"
say arg0 "$0"
i=1
for arg in "$@"; do say "arg$i" "$arg"; i=$((i + 1)); done
say pwd "$(pwd)"
say supervisor_writable "$(writable "$0")"

env | sort | sed 's/^/env./' >>"$report"

# The token: an owner-only file, read-only, holding exactly the token given.
token=${OPENSHELL_SANDBOX_TOKEN_FILE:-}
if [[ -n $token && -f $token ]]; then
  say token_mode "$(stat -c %a "$token")"
  say token_owner "$(stat -c %u "$token")"
  say token_dir_mode "$(stat -c %a "$(dirname "$token")")"
  sha=$(sha256sum <"$token" | cut -d' ' -f1)
  say token_sha256 "$sha"
  matches=no
  [[ $sha == "${EXPECTED_TOKEN_SHA256:-}" ]] && matches=yes
  say token_matches "$matches"
  say token_writable "$(writable "$token")"
else
  say token_file missing
fi

# The TLS client files, bound read-only.
for var in OPENSHELL_TLS_CA OPENSHELL_TLS_CERT OPENSHELL_TLS_KEY; do
  file=${!var:-}
  if [[ -n $file && -f $file ]]; then
    say "tls.$var" "$(head -c 200 "$file")"
    say "tls_writable.$var" "$(writable "$file")"
  else
    say "tls.$var" missing
  fi
done

# Capabilities in the sandbox's user namespace, and a network namespace of its own.
say cap_eff "$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
if unshare -n true 2>/dev/null; then say unshare_net ok; else say unshare_net failed; fi

# The directories the supervisor writes to.
for dir in /run/openshell /run/netns /etc/openshell-tls; do
  say "writable.$dir" "$(writable "$dir/probe")"
  say "fstype.$dir" "$(fstype "$dir")"
done

# The gateway, through the relay on the loopback port of OPENSHELL_ENDPOINT. The relay is
# attached just after the sandbox starts: retry for a while.
endpoint=${OPENSHELL_ENDPOINT:-}
hostport=${endpoint#*://}
host=${hostport%:*}
port=${hostport##*:}
reply=""
if [[ -n $endpoint ]]; then
  for _ in $(seq 100); do
    reply=$(
      exec 3<>"/dev/tcp/$host/$port" || exit 1
      printf 'ping %s\n' "$OPENSHELL_SANDBOX_ID" >&3
      read -r -t 5 line <&3 && printf '%s' "$line"
    ) 2>/dev/null
    [[ -n $reply ]] && break
    sleep 0.1
  done
fi
say relay "${reply:-none}"

# Bulk data both ways through the relay, when the test asks for it: N zero bytes up (the
# gateway answers with their SHA-256), then N zero bytes down.
bulk=${RELAY_BULK_BYTES:-}
if [[ -n $endpoint && -n $bulk ]]; then
  up=$(
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'bulk-up %d\n' "$bulk" >&3
    head -c "$bulk" /dev/zero >&3
    read -r -t 30 line <&3 && printf '%s' "$line"
  ) 2>/dev/null
  say relay_bulk_up "${up:-none}"
  down=$(
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'bulk-down %d\n' "$bulk" >&3
    head -c "$bulk" <&3 | sha256sum | cut -d' ' -f1
  ) 2>/dev/null
  say relay_bulk_down "${down:-none}"
fi

echo "REPORT-DONE" >>"$report"
echo "fake supervisor for $OPENSHELL_SANDBOX_ID: report written"
echo "fake supervisor: this line goes to stderr" >&2
exec sleep infinity
