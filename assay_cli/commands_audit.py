"""The access record: ``assay audit reads [--user U]`` lists who read whose data (operator)."""

from __future__ import annotations

import argparse

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import output
from assay_cli.commands_jobs import positive_int
from assay_cli.connect import Connection

RPC_TIMEOUT = 30.0
PAGE_SIZE = 200
DEFAULT_LIMIT = 100


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``audit reads``."""
    audit = commands.add_parser("audit", help="the access record (operator)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    reads = audit.add_parser(
        "reads",
        parents=[common],
        help="reads of a user's data by others (operators, internal callers), newest first",
    )
    reads.add_argument("--user", default="", help="whose data (default: every user's)")
    reads.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most N (default {DEFAULT_LIMIT})",
    )
    reads.set_defaults(run=audit_reads)


async def audit_reads(args: argparse.Namespace, conn: Connection) -> int:
    """``assay audit reads``: the archive's ListAccessRecords, page after page."""
    stub = await conn.archive()
    records: list[archive_pb.AccessRecord] = []
    page_token = ""
    while len(records) < args.limit:
        request = archive_pb.ListAccessRecordsRequest(
            user_id=args.user,
            page_size=min(PAGE_SIZE, args.limit - len(records)),
            page_token=page_token,
        )
        reply = await stub.ListAccessRecords(request, timeout=RPC_TIMEOUT)
        records += reply.records
        page_token = reply.next_page_token
        if not page_token:
            break
    if args.json:
        output.print_json({"records": [output.to_dict(r) for r in records]})
        return 0
    if not records:
        print("no recorded reads")
        return 0
    print(f"{'READ AT':19}  {'USER':16}  {'READER':24}  {'VIA':12}  {'RPC':11}  RESULT")
    for r in records:
        reader = f"{r.reader} ({r.reader_identity})"
        print(
            f"{output.when(r.read_at):19}  {r.user_id:16}  {reader:24}  {r.via or '-':12}"
            f"  {r.rpc:11}  {r.result_id or '-'}"
        )
    return 0
