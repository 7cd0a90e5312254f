"""The local stack: ``dev up [--detach]``, ``dev down`` and ``demo``.

``dev up`` starts PostgreSQL and NATS (unless ASSAY_DATABASE_URL / ASSAY_NATS_URL point at
running servers), the four services and the sweep loop, each a process of its own session
(so a terminal's Ctrl-C reaches only the CLI, which then stops them in order). Without
--detach it stays in the foreground until Ctrl-C or SIGTERM, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay_cli import output
from assay_cli.commands_submit import submit_and_follow
from assay_cli.connect import CliError, Connection, Target, load_settings, state_dir
from assay_cli.loader import load_submission
from assay_cli.stack import STATE_FILE, LocalStack, StackInfo
from assaylib.embedded import die_with_parent
from assaylib.issuer import Issuer

SWEEP_MODULE = "assessment_svc.sweep"
DEMO_USER = "demo-user"
DEMO_GRANT = 10
DEMO_TIMEOUT = 120.0  # seconds the demo waits for its job
DEMO_FILE = "talent-mapping.json"
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop everything, as for Ctrl-C."""


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Stopped for the duration."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_stack(stack: LocalStack) -> list[str]:
    """Stop everything; a second Ctrl-C or SIGTERM does not cut the clean-up short (each
    process gets a bounded grace, then SIGKILL)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        return stack.down()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class DevStack(LocalStack):
    """The local stack plus the sweep loop (``python -m assessment_svc.sweep --loop``)."""

    def start_sweep(self) -> int:
        """Start the sweep loop, recorded in pids as "sweep"; returns its pid."""
        log = open(self.logs / "sweep.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", SWEEP_MODULE, "--loop"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM) if self.die_with_parent else None,
        )
        log.close()
        self.processes["sweep"] = process
        if self.info is not None:
            self.info.pids["sweep"] = process.pid
            (self.state_dir / STATE_FILE).write_text(self.info.to_json())
        return process.pid

    def start(self) -> StackInfo:
        """Everything, with progress on stderr; stopped again if any of it fails."""
        info = self.up(output.progress)
        try:
            output.progress("starting the sweep loop")
            self.start_sweep()
        except BaseException:
            self.down()
            raise
        return info

    def exited(self) -> str:
        """The name of a started process that has exited, or ""."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return ""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``dev up|down`` and ``demo``."""
    dev = commands.add_parser("dev", help="the local stack").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    up = dev.add_parser("up", parents=[common], help="start the local stack")
    up.add_argument("--detach", action="store_true", help="return once everything is healthy")
    up.set_defaults(run_local=dev_up)
    down = dev.add_parser("down", parents=[common], help="stop what `dev up` started")
    down.set_defaults(run_local=dev_down)
    demo = commands.add_parser(
        "demo", parents=[common], help="start a stack, analyse a sample, print it, stop"
    )
    demo.add_argument("--file", default="", help=f"the assessment (default examples/{DEMO_FILE})")
    demo.set_defaults(run_local=run_demo)


def dev_up(args: argparse.Namespace) -> int:
    """``assay dev up``."""
    stack = DevStack(state_dir(args.state_dir), die_with_parent=not args.detach)
    if stack.is_up():
        raise CliError(
            f"the stack is already up in {stack.state_dir}; stop it with: assay dev down"
        )
    with stop_signals():
        try:
            info = stack.start()
            print_stack(info, json_mode=args.json, detached=args.detach)
            if args.detach:
                return EXIT_OK
            return _serve(stack)
        except (KeyboardInterrupt, Stopped):
            output.progress("stopping")
            stop_stack(stack)
            return EXIT_OK


def _serve(stack: DevStack) -> int:
    """Wait for Ctrl-C/SIGTERM, a dead process, or `assay dev down` from elsewhere."""
    state_file = stack.state_dir / STATE_FILE
    try:
        while True:
            if not state_file.exists():
                output.progress("stopped by `assay dev down`")
                stop_stack(stack)
                return EXIT_OK
            name = stack.exited()
            if name:
                log = stack.logs / f"{name}.log"
                output.progress(f"{name} exited unexpectedly (see {log}); stopping everything")
                stop_stack(stack)
                return EXIT_ERROR
            time.sleep(0.5)
    except (KeyboardInterrupt, Stopped):
        output.progress("stopping")
        stopped = stop_stack(stack)
        output.progress(f"stopped {', '.join(stopped) or 'nothing'}")
        return EXIT_OK


def print_stack(info: StackInfo, *, json_mode: bool, detached: bool) -> None:
    """The endpoints, the dev operator token and how to use them."""
    if json_mode:
        print(info.to_json(), flush=True)
        return
    rows = [
        ("assessment", info.assessment),
        ("archive", info.archive),
        ("notifier", info.notifier),
        ("worker", f"{info.worker} (health only)"),
        ("postgres", info.database_url),
        ("nats", info.nats_url),
    ]
    exports = {
        "ASSAY_ASSESSMENT_ADDR": info.assessment,
        "ASSAY_ARCHIVE_ADDR": info.archive,
        "ASSAY_NOTIFIER_ADDR": info.notifier,
        "ASSAY_SIGNING_KEY_FILE": info.signing_key_file,
        "ASSAY_TOKEN": info.token,
    }
    lines = [f"Assay is up · state and logs in {info.state_dir}", ""]
    lines += [f"  {name:<11} {value}" for name, value in rows]
    lines += ["", "Prometheus metrics:"]
    lines += [f"  {name:<11} {url}" for name, url in info.metrics.items()]
    lines += ["", "Dev operator token (valid 7 days):", f"  {info.token}", ""]
    lines += ["Commands run from this directory find the stack by themselves; elsewhere:"]
    lines += [f"  export {var}={value}" for var, value in exports.items()]
    lines += ["", "Stop it with: assay dev down" if detached else "Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)


def dev_down(args: argparse.Namespace) -> int:
    """``assay dev down``: stops exactly the processes recorded by ``dev up``."""
    stack = LocalStack(state_dir(args.state_dir))
    recorded = (stack.state_dir / STATE_FILE).exists()
    stopped = stack.down() if recorded else []
    if args.json:
        output.print_json({"state_dir": str(stack.state_dir), "stopped": stopped})
    elif not recorded:
        print(f"no stack is recorded in {stack.state_dir}; nothing to stop")
    else:
        print(f"stopped {', '.join(stopped) or 'nothing (already stopped)'}")
    return EXIT_OK


# ---- the demo ---------------------------------------------------------------------------


def demo_file(explicit: str) -> Path:
    """The demo's assessment: --file, else examples/ here or next to the package."""
    if explicit:
        return Path(explicit)
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base / "examples" / DEMO_FILE
        if candidate.exists():
            return candidate
    raise CliError(f"cannot find examples/{DEMO_FILE}; pass --file", exit_code=2)


def run_demo(args: argparse.Namespace) -> int:
    """``assay demo``: a throw-away stack, one analysis watched live, then everything stopped."""
    path = demo_file(args.file)
    request, _ = load_submission(path)  # a bad file fails before anything starts
    workdir = Path(tempfile.mkdtemp(prefix="assay-demo-"))
    stack = DevStack(workdir / "state", die_with_parent=True)
    with stop_signals():
        try:
            info = stack.start()
            return asyncio.run(_demo_flow(info, request, path, json_mode=args.json))
        except (KeyboardInterrupt, Stopped):
            output.progress("interrupted")
            return EXIT_INTERRUPTED
        finally:
            output.progress("stopping the stack")
            stop_stack(stack)
            shutil.rmtree(workdir, ignore_errors=True)


async def _demo_flow(
    info: StackInfo, request: pb.SubmitAssessmentRequest, path: Path, *, json_mode: bool
) -> int:
    settings = load_settings(os.environ)
    addrs = {"assessment": info.assessment, "archive": info.archive, "notifier": info.notifier}
    operator = Target(settings, addrs, info.token, info.signing_key_file, info)
    async with Connection(operator) as conn:
        archive = await conn.archive()
        grant = archive_pb.GrantTokensRequest(user_id=DEMO_USER, amount=DEMO_GRANT, reason="demo")
        reply = await archive.GrantTokens(grant, timeout=30)
        output.progress(f"granted {DEMO_GRANT} tokens to {DEMO_USER} (balance {reply.balance})")
    output.progress(f"submitting {path} as {DEMO_USER}")
    user_token = Issuer.load(info.signing_key_file).mint(DEMO_USER, ["user"], ttl=3600)
    target = Target(settings, addrs, user_token, info.signing_key_file, info)
    async with Connection(target) as conn:
        return await submit_and_follow(conn, request, json_mode=json_mode, wait_limit=DEMO_TIMEOUT)
