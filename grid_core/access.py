"""Who may do what on a cluster (the config's `[access]`; docs/security.md): plain rules, no engine.

The grid service learns each caller's Unix user from the kernel (SO_PEERCRED) and asks `role`; a
CLI on another machine logs in to the head as its own user (channel_head), so sshd reaches the
service's socket as that user.
- `owner`: the account that runs the cluster, and root; `admin`: `access.admins`. Both may do
  everything: start, stop, install or enable the cluster, change plugins or offload settings, hold
  or release a node, request boosts, and stop, hold or read any job.
- `member`: `access.users`, and `access.group`'s members. They run jobs and manage their own, list
  everyone's jobs (not their output), read the cluster's status and use the memory pool.
- Anyone else is refused, in words that name the keys that would let them in.
"""

from __future__ import annotations

import grp
import pwd
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from grid_core.config.models import AccessSettings, ClusterConfig, NodeConfig

Role = Literal["owner", "admin", "member"]
MANAGES = ("owner", "admin")


def channel_head(config: ClusterConfig) -> NodeConfig:
    """The head as the CLI reaches the grid service there. With [access], each person logs in as
    themselves (their ~/.ssh/config's `User`, else their local name), so that the service knows
    who asks; the head's `user` names the account that runs the cluster, used only to manage it."""
    import attrs

    return attrs.evolve(config.head, user=None) if config.access.shared else config.head


def in_group(user: str, group: str) -> bool:
    """Whether the head's user database puts `user` in `group` (as a supplementary or primary one)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if user in entry.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == entry.gr_gid
    except KeyError:
        return False


def role(access: AccessSettings, user: str, owner: str) -> Role | None:
    """What `user` is to the cluster that `owner` runs; None: a stranger."""
    if user and user in (owner, "root"):
        return "owner"
    if user in access.admins:
        return "admin"
    if user in access.users or (access.group is not None and in_group(user, access.group)):
        return "member"
    return None


def stranger(user: str, cluster: str) -> str:
    """The refusal for someone the config does not let in."""
    who = user or "a caller without a user name"
    return (f"{who} may not use cluster {cluster!r}: its owner lets people in with [access] users = "
            f"[...] or group = \"...\" in the cluster's config")


def needs_manager(user: str, what: str) -> str:
    """The refusal of something only the owner and the admins may do."""
    return f"{user} may not {what}: only the cluster's owner and [access] admins may"


def jobs_run_as(config: ClusterConfig) -> str | None:
    """For `grid doctor`, with [access]: the warning that members' jobs run as the cluster's account;
    None where each runs as its submitter (the cluster runs as root) or there are no members."""
    import getpass

    account = config.head.user or getpass.getuser()
    if not config.access.shared or account == "root":
        return None
    return (f"the cluster runs as {account}: every member's job runs as {account}, so a member can do "
            f"anything {account} can on every node (docs/security.md); run a lab's cluster as root to run "
            "each job as its submitter")
