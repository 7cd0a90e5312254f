"""``assay users erase USER [--request-id ID]``: erase a user's personal data (the archive's
EraseUserData, operator only); ``assay users tier USER TIER``: set the tier of a user whose
tokens name none (SetUserTier, operator only; ``""`` removes it)."""

from __future__ import annotations

import argparse
import uuid

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import output
from assay_cli.connect import Connection

# An erasure walks every job of the user in batches; give it longer than a plain read.
RPC_TIMEOUT = 300.0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``users erase`` and ``users tier``."""
    users = commands.add_parser("users", help="users' personal data (operator)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    erase = users.add_parser(
        "erase",
        parents=[common],
        help="erase a user's answers and profiles; cancel and refund their jobs in flight",
    )
    erase.add_argument("user", metavar="USER", help="the user id")
    erase.add_argument(
        "--request-id",
        default="",
        help="idempotency key: repeat it to finish an interrupted erasure (default: a new one)",
    )
    erase.set_defaults(run=users_erase)
    tier = users.add_parser(
        "tier",
        parents=[common],
        help="set a user's tier (their jobs' priority lane) when their tokens name none",
    )
    tier.add_argument("user", metavar="USER", help="the user id")
    tier.add_argument("tier", metavar="TIER", help='one of ASSAY_TIERS\' names; "" removes it')
    tier.set_defaults(run=users_tier)


async def users_tier(args: argparse.Namespace, conn: Connection) -> int:
    """``assay users tier USER TIER``: prints the tier now recorded and its lane."""
    stub = await conn.archive()
    reply = await stub.SetUserTier(archive_pb.SetUserTierRequest(user_id=args.user, tier=args.tier))
    if args.json:
        output.print_json(output.to_dict(reply))
    else:
        print(f"{reply.user_id} is now {reply.tier} (priority {reply.priority})")
    return 0


async def users_erase(args: argparse.Namespace, conn: Connection) -> int:
    """``assay users erase USER``: prints what was erased, and the request id to repeat."""
    request_id = args.request_id or f"cli-{uuid.uuid4()}"
    stub = await conn.archive()
    request = archive_pb.EraseUserDataRequest(user_id=args.user, request_id=request_id)
    reply = await stub.EraseUserData(request, timeout=RPC_TIMEOUT)
    if args.json:
        output.print_json(output.to_dict(reply))
        return 0
    again = " (repeated: the first erasure's record)" if reply.replayed else ""
    print(
        f"erased {reply.user_id}'s data{again}: {reply.jobs_cancelled} job(s) in flight"
        f" cancelled and refunded, {reply.results_erased} result(s) erased,"
        f" {reply.outbox_messages_erased + reply.queue_messages_deleted} queue message(s)"
        f" deleted; request id {reply.request_id}"
    )
    return 0
