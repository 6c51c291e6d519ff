"""``crmsync users``: broker users with exactly what their role needs."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from router.cli.common import ConfigOpt, JsonOpt, broker_config, out, print_json
from router.errors import ConfigError, CrmsyncError

if TYPE_CHECKING:
    from router.broker.management import Management

app = typer.Typer(help="Broker users for adapters, the router and operators.", no_args_is_help=True)

RoleOpt = Annotated[str, typer.Option("--role", help="adapter, router or operator.")]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="The password (one line). Without it one is made and written to NAME.password.",
    ),
]


def _management(config: Path | None) -> Management:
    from router.broker.management import Management, management_base

    broker = broker_config(config)
    url = broker.effective_url()
    return Management(url, management_base(url, broker.management_url))


def _password(name: str, path: Path | None) -> tuple[str, str]:
    """(password, where it is): read from ``path``, or made and written to a new file
    only its owner may read (never printed)."""
    from router.config import read_secret

    if path is not None:
        secret = read_secret(path, "--password-file")
        if not secret:
            raise ConfigError(f"--password-file: {path} is empty")
        return secret, str(path)
    target = Path(f"{name}.password")
    secret = secrets.token_urlsafe(24)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{target} exists: pass it as --password-file or remove it") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, f"{target} (new)"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The user; for an adapter, its name.")],
    role: RoleOpt,
    password_file: PasswordFileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create (or reset) a broker user with exactly its role's permissions on the vhost
    of broker.url (docs/operations.md, "Users and permissions")."""
    from router import users
    from router.events import NAME_RE

    if role not in users.ROLES:
        raise ConfigError(f"--role: {role!r} is not one of {', '.join(users.ROLES)}")
    if role == "adapter" and not re.fullmatch(NAME_RE, name):
        raise ConfigError(f"{name!r} is not a valid adapter name")
    api = _management(config)
    try:
        existing = api.user(name)
        if existing is not None and users.role_of(existing.get("tags", "")) is None:
            raise CrmsyncError(
                f"user {name!r} exists and was not made by crmsync; pick another name"
            )
        password, where = _password(name, password_file)
        api.create(name, password, users.tag(role), users.grant(role, name))
    finally:
        api.close()
    out.print(f"user {name} ({role}) on vhost {api.vhost}; password in {where}", highlight=False)


@app.command("list")
def list_users(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Users with permissions on the vhost of broker.url, and their crmsync role."""
    from router import users

    api = _management(config)
    try:
        found = api.users()
    finally:
        api.close()
    rows = [
        {"user": u["user"], "role": users.role_of(u.get("tags", "")) or "-"}
        for u in sorted(found, key=lambda u: str(u["user"]))
    ]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        out.print(f"{row['user']}\t{row['role']}", highlight=False, markup=False)


@app.command("remove")
def remove(name: str, config: ConfigOpt = None) -> None:
    """Delete a user crmsync made (its connections are closed by the broker)."""
    from router import users

    api = _management(config)
    try:
        existing = api.user(name)
        if existing is None:
            raise CrmsyncError(f"no user named {name!r}")
        if users.role_of(existing.get("tags", "")) is None:
            raise CrmsyncError(f"user {name!r} was not made by crmsync; not removing it")
        api.remove(name)
    finally:
        api.close()
    out.print(f"user {name} removed", highlight=False)
