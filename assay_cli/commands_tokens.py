"""Token balances and bearer tokens: ``tokens balance|grant`` and ``token mint``."""

from __future__ import annotations

import argparse

import jwt

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay_cli import output
from assay_cli.commands_jobs import positive_int
from assay_cli.connect import CliError, Connection
from assaylib.auth import ROLES, mint_token
from assaylib.config import ConfigError, parse_duration

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
        "mint", parents=[common], help="sign a bearer token (needs ASSAY_JWT_SECRET or a stack)"
    )
    mint.add_argument("--user", required=True)
    mint.add_argument(
        "--role",
        action="append",
        choices=sorted(ROLES),
        required=True,
        help="repeat for several roles",
    )
    mint.add_argument("--ttl", type=duration_arg, default=DEFAULT_TTL, help="default 1h")
    mint.set_defaults(run=token_mint, offline=True)


async def tokens_balance(args: argparse.Namespace, conn: Connection) -> int:
    """``assay tokens balance [--user U]``."""
    stub = await conn.assessment()
    request = pb.GetTokenBalanceRequest(user_id=args.user)
    reply = await stub.GetTokenBalance(request, timeout=RPC_TIMEOUT)
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
    secret = conn.target.jwt_secret
    if not secret:
        raise CliError(
            "no JWT secret: set ASSAY_JWT_SECRET or start a local stack (assay dev up)",
            exit_code=2,
        )
    try:
        token = mint_token(secret, args.user, args.role, ttl=args.ttl)
    except ValueError as err:
        raise CliError(f"cannot mint a token: {err}", exit_code=2) from None
    if args.json:
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]
        output.print_json(
            {
                "token": token,
                "user_id": args.user,
                "roles": sorted(set(args.role)),
                "expires_at": expires,
            }
        )
    else:
        print(token)
    return 0
