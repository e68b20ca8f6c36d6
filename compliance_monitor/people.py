"""``compliance-monitor users ...`` and ``audit ...``: people, machine tokens and the audit chain, from the shell.

Both work on the archive database directly (the server may be running: SQLite WAL allows it)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from compliance_monitor.api.auth import USER_ROLES, hash_secret, new_secret
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.config import Settings

T = TypeVar("T")
TOKEN_ROLES = (*USER_ROLES, "bridge")


def cli_actor() -> str:
    """Who ran the command, as audit entries name them: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _with_archive(settings: Settings, fn: Callable[[Archive], Awaitable[T]]) -> T:
    async def run() -> T:
        archive = Archive(settings.archive.path, lambda text: [])  # no segments written here: no tokenizer
        await archive.open()
        try:
            return await fn(archive)
        finally:
            await archive.aclose()

    return asyncio.run(run())


def check_user(role: str, agent_id: str | None, roles: tuple[str, ...] = USER_ROLES) -> None:
    if role not in roles:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(roles)}")
    if role == "collector" and not agent_id:
        raise ValueError("a collector needs --agent-id (the agent id their calls carry)")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return password


def cmd_users_add(settings: Settings, args: argparse.Namespace) -> int:
    from compliance_monitor.api.session import HASHER

    check_user(args.role, args.agent_id)
    password_hash = HASHER.hash(_read_password(args.password_stdin))
    _with_archive(settings, lambda a: a.add_user(args.name, args.role, args.agent_id, password_hash, cli_actor()))
    print(f"user {args.name} added ({args.role}{' ' + args.agent_id if args.agent_id else ''})")
    return 0


def cmd_users_list(settings: Settings, args: argparse.Namespace) -> int:
    for u in _with_archive(settings, lambda a: a.list_users()):
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(u["created_at"]))
        state = "disabled" if u["disabled"] else "active"
        print(f"{u['name']:<24} {u['role']:<10} {u['agent_id'] or '-':<10} {state:<8} {created}")
    return 0


def cmd_users_disable(settings: Settings, args: argparse.Namespace) -> int:
    if not _with_archive(settings, lambda a: a.set_user_disabled(args.name, True, cli_actor())):
        raise ValueError(f"no user named {args.name!r}")
    print(f"user {args.name} disabled; their sessions ended")
    return 0


def cmd_users_token(settings: Settings, args: argparse.Namespace) -> int:
    check_user(args.role, args.agent_id, TOKEN_ROLES)
    secret = new_secret()
    _with_archive(
        settings, lambda a: a.add_token(args.name, args.role, args.agent_id, hash_secret(secret), cli_actor())
    )
    print(f"token for {args.name} ({args.role}), shown once, send it as 'Authorization: Bearer <token>':")
    print(secret)
    return 0


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    anchor = json.loads(Path(args.anchor).read_text()) if args.anchor else None

    async def run(archive: Archive) -> tuple[dict[str, Any], str | None]:
        report = await archive.verify_report(args.call)
        anchor_problem = None
        if anchor is not None:
            found = await archive.audit_hash_at(int(anchor["audit_id"]))
            if found is None:
                anchor_problem = f"anchored entry {anchor['audit_id']} is gone"
            elif found != anchor["hash"]:
                anchor_problem = f"entry {anchor['audit_id']} no longer has the anchored hash (chain rewritten)"
        return report, anchor_problem

    report, anchor_problem = _with_archive(settings, run)
    scope = f"call {args.call}" if args.call else "archive"
    if report["ok"] and anchor_problem is None:
        print(f"OK: {report['entries']} audit entries verified ({scope})" + (", anchor reached" if args.anchor else ""))
        return 0
    if not report["ok"]:
        first = report["breaks"][0]
        print(
            f"BROKEN ({scope}): audit_id {first['audit_id']} ({first['kind']} {first['ref_id']}): {first['problem']}"
            f"; {len(report['breaks'])} broken link(s)",
            file=sys.stderr,
        )
    if anchor_problem:
        print(f"BROKEN: {anchor_problem}", file=sys.stderr)
    return 1


def cmd_audit_head(settings: Settings, args: argparse.Namespace) -> int:
    async def run(archive: Archive) -> dict[str, Any]:
        return archive.audit_head()

    head = _with_archive(settings, run)
    head["exported_at"] = time.time()
    text = json.dumps(head, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        os.chmod(args.out, 0o644)
        print(f"audit head {head['audit_id']} written to {args.out}")
    else:
        print(text)
    return 0


def add_parsers(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """``users`` and ``audit`` subcommands on the main parser."""

    def bind(fn: Callable[[Settings, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(settings_of(args), args)

    users = sub.add_parser("users", help="people and machine tokens").add_subparsers(dest="users_cmd", required=True)
    add = users.add_parser("add", help="add a user (asks for the password twice)")
    add.add_argument("name", help="the login name (audit entries name the person by it)")
    add.add_argument("--role", required=True, help=f"one of {', '.join(USER_ROLES)}")
    add.add_argument("--agent-id", help="collectors: the agent id their calls carry (required)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(func=bind(cmd_users_add))
    users.add_parser("list", help="users and tokens").set_defaults(func=bind(cmd_users_list))
    dis = users.add_parser("disable", help="disable a user and end their sessions")
    dis.add_argument("name", help="the user to disable")
    dis.set_defaults(func=bind(cmd_users_disable))
    tok = users.add_parser("token", help="create an API token for a machine (printed once)")
    tok.add_argument("name", help="the token's label (audit entries name it token:<label>)")
    tok.add_argument("--role", required=True, help=f"one of {', '.join(TOKEN_ROLES)}")
    tok.add_argument("--agent-id", help="collector tokens: the agent id")
    tok.set_defaults(func=bind(cmd_users_token))

    audit = sub.add_parser("audit", help="the audit hash chain").add_subparsers(dest="audit_cmd", required=True)
    ver = audit.add_parser("verify", help="recompute the chain; exits 1 at a broken link")
    ver.add_argument("--call", help="only this call's entries")
    ver.add_argument("--anchor", help="a head exported earlier (audit head --out): the chain must still reach it")
    ver.set_defaults(func=bind(cmd_audit_verify))
    head = audit.add_parser("head", help="export the chain's head (audit_id, hash, time) for anchoring elsewhere")
    head.add_argument("--out", help="write it to this file (default: stdout)")
    head.set_defaults(func=bind(cmd_audit_head))
