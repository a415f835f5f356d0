#!/bin/sh
# guardian's redeploy hook when guardian runs under systemd/guardian.service.
#
# guardian runs this after committing a revert or applying an approved proposal
# ([daemon.rollback] hook; GUARDIAN_ACTION says which). It asks systemd,
# over D-Bus, to run app-redeploy.service, waits for it to finish, and exits with its
# status: 0 when the deploy succeeded, non-zero otherwise. guardian then judges recovery
# from the traffic, not from this status alone.
#
# It runs inside guardian's sandbox (no sudo, no capabilities): the privileged work is in
# app-redeploy.service, and the polkit rule guardian-redeploy.rules allows exactly this one
# `start` for the guardian user. Install as root:root 0755, e.g.
#   install -o root -g root -m 0755 systemd/redeploy-via-systemd.sh \
#       /usr/local/lib/guardian/redeploy-via-systemd.sh
# and in /etc/guardian/guardian.toml:
#   [daemon.rollback]
#   hook = ["/usr/local/lib/guardian/redeploy-via-systemd.sh"]
#   hook_timeout_secs = 360    # above app-redeploy's TimeoutStartSec + TimeoutStopSec
#
# Killing this script (guardian's hook timeout) does not stop a deploy in progress: the job
# belongs to systemd. That is why guardian's timeout should be the longer one.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

unit=app-redeploy.service

case "${GUARDIAN_ACTION:-rollback}" in
    deploy) echo "guardian: starting $unit (deploy of ${GUARDIAN_COMMIT:-unknown}, proposal ${GUARDIAN_PROPOSAL_ID:-unknown})" ;;
    *) echo "guardian: starting $unit (revert ${GUARDIAN_REVERT_COMMIT:-unknown} of ${GUARDIAN_COMMIT:-unknown}, attempt ${GUARDIAN_ATTEMPT:-1})" ;;
esac
# --no-ask-password: never wait for an interactive polkit agent; without the polkit rule the
# start is refused at once ("Access denied"), which is the error to see.
# --wait: also wait until the unit is inactive again; for a oneshot unit start already
# waits for ExecStart= to finish, and the exit status is non-zero when it failed.
systemctl --no-ask-password start --wait "$unit"
status=$?
if [ "$status" -eq 0 ]; then
    echo "guardian: $unit finished successfully"
else
    echo "guardian: $unit failed (systemctl exit status $status); details: journalctl -u $unit" >&2
    # Result (exit-code, timeout, ...) and the exit status of the deploy, for the post-mortem.
    # Reading unit properties needs no privilege.
    systemctl show --property=Result --property=ExecMainStatus "$unit" >&2 || true
fi
exit "$status"
