"""Token balances and bearer tokens: ``tokens balance|grant`` and ``token mint``."""

from __future__ import annotations

import argparse

import jwt

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import output
from assay_cli.commands_jobs import positive_int
from assay_cli.connect import CliError, Connection
from assaylib.access import SERVICE_IDENTITIES
from assaylib.auth import ROLES
from assaylib.config import ConfigError, parse_duration
from assaylib.issuer import Issuer

DEFAULT_TTL = "1h"
RPC_TIMEOUT = 30.0


def duration_arg(text: str) -> float:
    """``90s`` / ``10m`` / ``7d`` / seconds (argparse type)."""
    try:
        return parse_duration(text)
    except (ConfigError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``tokens balance|grant`` and ``token mint``."""
    tokens = commands.add_parser("tokens", help="token balances").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    balance = tokens.add_parser("balance", parents=[common], help="a token balance")
    balance.add_argument("--user", default="", help="operators: this user's balance")
    balance.set_defaults(run=tokens_balance)
    grant = tokens.add_parser("grant", parents=[common], help="credit tokens (operator)")
    grant.add_argument("--user", required=True)
    grant.add_argument("--amount", type=positive_int, required=True)
    grant.add_argument("--reason", default="granted with the assay CLI")
    grant.set_defaults(run=tokens_grant)

    token = commands.add_parser("token", help="bearer tokens").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    mint = token.add_parser(
        "mint",
        parents=[common],
        help="sign a bearer token (with ASSAY_SIGNING_KEY_FILE, else the local stack's key)",
    )
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the token's subject (with --role)")
    who.add_argument(
        "--service",
        choices=SERVICE_IDENTITIES,
        help="a token of Assay's own service NAME (role service)",
    )
    mint.add_argument(
        "--role",
        action="append",
        choices=sorted(ROLES),
        default=[],
        help="with --user; repeat for several roles",
    )
    mint.add_argument("--ttl", type=duration_arg, default=DEFAULT_TTL, help="default 1h")
    mint.set_defaults(run=token_mint, offline=True)


async def tokens_balance(args: argparse.Namespace, conn: Connection) -> int:
    """``assay tokens balance [--user U]``."""
    reply = await (await conn.client()).balance(args.user)
    if args.json:
        output.print_json(output.to_dict(reply))
    else:
        print(f"{reply.user_id}: {reply.balance} token(s)")
    return 0


async def tokens_grant(args: argparse.Namespace, conn: Connection) -> int:
    """``assay tokens grant --user U --amount N``: the archive's GrantTokens (operator)."""
    stub = await conn.archive()
    request = archive_pb.GrantTokensRequest(
        user_id=args.user, amount=args.amount, reason=args.reason
    )
    reply = await stub.GrantTokens(request, timeout=RPC_TIMEOUT)
    if args.json:
        output.print_json(output.to_dict(reply))
    else:
        print(f"granted {args.amount} token(s) to {args.user}; balance {reply.balance}")
    return 0


async def token_mint(args: argparse.Namespace, conn: Connection) -> int:
    """``assay token mint``: prints just the token, so `export ASSAY_TOKEN=$(…)` works."""
    key_file = conn.target.signing_key_file
    if not key_file:
        raise CliError(
            "no signing key: set ASSAY_SIGNING_KEY_FILE or start a local stack (assay dev up)",
            exit_code=2,
        )
    if args.user is not None and not args.role:
        raise CliError("--user needs at least one --role", exit_code=2)
    subject, roles = (args.service, ["service"]) if args.service else (args.user, args.role)
    try:
        issuer = Issuer.load(key_file)
        token = issuer.mint(subject, roles, ttl=args.ttl)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot mint a token: {err}", exit_code=2) from None
    if args.json:
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]
        output.print_json(
            {
                "token": token,
                "user_id": subject,
                "roles": sorted(set(roles)),
                "expires_at": expires,
            }
        )
    else:
        print(token)
    return 0
