"""`assay`: the Assay command line — the local stack, submissions, jobs, tokens.

Exit codes: 0 success; 1 the server refused, a job ended FAILED/CANCELLED, or the stack
could not start; 2 a usage mistake (bad arguments, an unreadable or malformed file, bad
configuration); 3 the sweep held back; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grpc
import grpc.aio
from assay_client import AssayError
from assay_client.errors import from_rpc_error

from assay_cli import (
    commands_audit,
    commands_dev,
    commands_import,
    commands_jobs,
    commands_status,
    commands_submit,
    commands_tokens,
    commands_users,
    output,
)
from assay_cli.connect import CliError, Connection, resolve, state_dir, unreachable
from assay_cli.loader import SubmissionFileError
from assay_cli.stack import StackError
from assaylib.version import VERSION

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """Every command, with --json, --token and --state-dir on each."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--token", default="", help="bearer token (default ASSAY_TOKEN, else the stack's)"
    )
    common.add_argument(
        "--state-dir",
        default="",
        metavar="DIR",
        help="stack state (default ASSAY_STATE_DIR or .assay)",
    )
    parser = argparse.ArgumentParser(
        prog="assay",
        description="Assay: psychometric assessment analyses as durable jobs.",
        epilog="Start with `assay demo`, or `assay dev up` and `assay submit FILE --watch`.",
    )
    parser.add_argument("--version", action="version", version=f"assay {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands_dev.register(commands, common)
    commands_submit.register(commands, common)
    commands_jobs.register(commands, common)
    commands_tokens.register(commands, common)
    commands_status.register(commands, common)
    commands_users.register(commands, common)
    commands_audit.register(commands, common)
    commands_import.register(commands, common)
    return parser


async def run_client(args: argparse.Namespace) -> int:
    """Resolve endpoints and token, run a client command, report a refused call."""
    target = resolve(args.token, state_dir(args.state_dir))
    async with Connection(target) as conn:
        try:
            code: int = await args.run(args, conn)
            return code
        except AssayError as err:
            report_error(err, conn)
            return EXIT_ERROR
        except grpc.aio.AioRpcError as err:  # the archive's operator calls
            report_error(from_rpc_error(err), conn)
            return EXIT_ERROR


def report_error(error: AssayError, conn: Connection | None = None) -> None:
    """``error: CODE REASON: message`` and the field violations (or the unreachable hint)."""
    if error.code == grpc.StatusCode.UNAVAILABLE and conn is not None:
        service = conn.service_of(error)
        output.print_error(unreachable(service, conn.target.addrs[service]))
        return
    for line in output.error_lines(error):
        print(line, file=sys.stderr)


def dispatch(args: argparse.Namespace) -> int:
    """Run the command; every expected failure becomes a message and an exit code."""
    try:
        if hasattr(args, "run_local"):
            code: int = args.run_local(args)
            return code
        return asyncio.run(run_client(args))
    except SubmissionFileError as err:
        output.print_error(err.message, err.violations)
        return EXIT_USAGE
    except CliError as err:
        output.print_error(err.message)
        return err.exit_code
    except StackError as err:
        output.print_error(str(err))
        return EXIT_ERROR
    except AssayError as err:
        report_error(err)
        return EXIT_ERROR
    except grpc.aio.AioRpcError as err:
        report_error(from_rpc_error(err))
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `assay watch --json | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `assay` console script and `python -m assay_cli`."""
    args = build_parser().parse_args(argv)
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
