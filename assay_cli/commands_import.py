"""``assay import original --source DSN``: the cut-over from the original system (operator).

Reads the original's users and jobs (with their results) in pages, turns them into batches of
the archive's ImportOriginalJobs (each batch one transaction in the archive), and after each
batch saves a checkpoint: the phase (users, then jobs, then results without a job) and the
last key read. Killed at any point, the next run with the same options resumes from the
checkpoint; a batch written just before the kill is sent again and skipped as already present
(the archive is idempotent per original id), so nothing is imported twice. A finished
checkpoint makes the next run start over, which imports only what is new.

Exit codes: 0 done; 1 rows were rejected (unless ``--allow-rejects``), ``--verify`` found
differences, or the archive refused; 2 a usage mistake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from assay_cli import import_verify, output
from assay_cli.connect import CliError, Connection, state_dir
from assay_cli.import_report import Checkpoint, Rejects
from assay_cli.import_run import MAX_BATCH, Run
from assay_cli.original import Source

if TYPE_CHECKING:
    from assay.archive.v1.archive_service_pb2_grpc import ArchiveServiceAsyncStub


DEFAULT_REJECTS = {False: "import-rejects.jsonl", True: "import-rejects-dry-run.jsonl"}
"""In the state directory; a dry run never overwrites a real run's rejects."""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``import original``."""
    imports = commands.add_parser(
        "import", help="bring another system's data across (operator)"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    original = imports.add_parser(
        "original",
        parents=[common],
        help="the original PetaTalenta system's jobs, results and token balances",
    )
    original.add_argument(
        "--source", required=True, metavar="DSN", help="the original's database (postgresql://…)"
    )
    original.add_argument(
        "--dry-run", action="store_true", help="decide every row as the import would, write nothing"
    )
    original.add_argument("--batch", type=int, default=500, metavar="N", help="jobs per batch")
    original.add_argument(
        "--since",
        type=_when,
        default=None,
        metavar="TIME",
        help="only what the original wrote since TIME (ISO 8601), and every job in flight",
    )
    original.add_argument(
        "--in-flight",
        choices=("queue", "fail", "leave"),
        default="queue",
        help="jobs queued or processing in the original: queue them in Assay without charging"
        " again (default), fail and refund them, or leave them for a later pass",
    )
    original.add_argument(
        "--allow-rejects", action="store_true", help="exit 0 even when rows were rejected"
    )
    original.add_argument(
        "--rejects",
        default="",
        metavar="FILE",
        help="where rejected rows go, JSON Lines (default: STATE_DIR/import-rejects.jsonl;"
        " a dry run's: import-rejects-dry-run.jsonl)",
    )
    original.add_argument(
        "--checkpoint",
        default="",
        metavar="FILE",
        help="where progress is saved to resume from (default: STATE_DIR/import-<source>.json)",
    )
    original.add_argument(
        "--verify",
        action="store_true",
        help="write nothing: compare the source with Assay row by row and list every difference",
    )
    original.set_defaults(run=import_original)


def _when(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def fingerprint(dsn: str) -> str:
    """A short name for a source, without its password."""
    bare = dsn.split("@", 1)[-1]
    return hashlib.sha256(bare.encode()).hexdigest()[:12]


async def import_original(args: argparse.Namespace, conn: Connection) -> int:
    """``assay import original``: import (or with --verify, compare), then report."""
    if not 1 <= args.batch <= MAX_BATCH:
        raise CliError(f"--batch must be 1–{MAX_BATCH}", exit_code=2)
    base = state_dir(args.state_dir)
    stub = await conn.archive()
    try:
        source = await Source.open(args.source)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot reach the source database: {err}") from None
    except Exception as err:  # asyncpg's errors (bad password, no such database)
        raise CliError(f"cannot open the source database: {err}") from None
    try:
        if args.verify:
            return await import_verify.verify(args, source, stub)
        return await _import(args, source, stub, base)
    finally:
        await source.close()


async def _import(
    args: argparse.Namespace, source: Source, stub: ArchiveServiceAsyncStub, base: Path
) -> int:
    options = {
        "source": fingerprint(args.source),
        "since": args.since.isoformat() if args.since else None,
        "in_flight": args.in_flight,
        "dry_run": args.dry_run,
    }
    path = Path(args.checkpoint or base / f"import-{options['source']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint.load(path, options)
    if checkpoint.resumed and not args.json:
        output.progress(f"resuming the import from its checkpoint ({checkpoint.phase})")
    rejects = Rejects(
        Path(args.rejects or base / DEFAULT_REJECTS[args.dry_run]), append=checkpoint.resumed
    )
    run = Run(args, source, stub, checkpoint, rejects)
    try:
        await run.all()
    finally:
        rejects.close()
    report = checkpoint.report
    if args.json:
        output.print_json(
            {
                **report.to_dict(),
                "dry_run": args.dry_run,
                "resumed": checkpoint.resumed,
                "rejects_file": str(rejects.path),
            }
        )
    else:
        print("\n".join(report.lines()))
        if report.rejected:
            print(f"{report.rejected:,} row(s) rejected: see {rejects.path}")
    return 1 if report.rejected and not args.allow_rejects else 0
