"""``agh agent …``: the agent side of the protocol for shell-script agents.

A shell agent claims with ``claimed=$(agh agent claim --name coder --env)``
and ``eval "$claimed"``,
and every later command finds its run, token and session in the
environment (``AGH_RUN_ID``, ``AGH_CLAIM_TOKEN``, ``AGH_SESSION_ID``): no
argument to thread through the script. With a session (``--name`` on the
claim, ``AGH_SESSION_ID`` after), each command first says ``session.hello``
with that session id, so the run stays claimed by, and its activity is
shown for, the named agent rather than the CLI. Owns: parsing and printing
for ``agent.*``. Must not: hold a claim past the command (``agh worker``
and ``Client.claim()`` do that).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agh.cli.connect import connect
from agh.cli.exits import EXIT_NO_WORK, fail
from agh.cli.group import SafeGroup
from agh.cli.options import (
    JSON,
    LOG_LEVELS,
    json_option,
    seconds_to_ms,
    token_option,
    workspace_ref,
)
from agh.cli.output import age, emit_json, format_fields, format_table

if TYPE_CHECKING:
    from agh import protocol as p
    from agh.client import Client

F = TypeVar("F", bound=Callable[..., Any])

run_argument = click.argument("run_id", metavar="[RUN]", envvar="AGH_RUN_ID", required=True)


def session_option(fn: F) -> F:
    return click.option(
        "--session",
        "session_id",
        envvar="AGH_SESSION_ID",
        show_envvar=True,
        metavar="ID",
        help="Act as this agent session (printed by `agh agent claim --name`).",
    )(fn)


def held_run_options(fn: F) -> F:
    """--run, --token and --session: the claim a command acts on, from the
    environment `agh agent claim --env` set up unless given."""
    fn = session_option(fn)
    fn = token_option(fn)
    return click.option(
        "--run",
        "run_id",
        envvar="AGH_RUN_ID",
        required=True,
        metavar="RUN",
        help="The run. [env var: AGH_RUN_ID]",
    )(fn)


def wait_option(text: str) -> Callable[[F], F]:
    """--wait SECONDS of a claim's long poll (the daemon's bound: 60 s)."""
    return click.option(
        "--wait",
        type=click.FloatRange(0, 60),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help=text,
    )


def lease_option(text: str) -> Callable[[F], F]:
    """--lease SECONDS of a claim (the daemon's bounds)."""
    return click.option("--lease", type=click.FloatRange(1, 86_400), metavar="SECONDS", help=text)


def next_options(fn: F) -> F:
    """--next and what it claims: one command per cycle for a shell agent
    (PROTOCOL §6, one round trip per cycle). The command takes them as
    ``**chain`` and hands them to ``next_params``."""
    for option in reversed(
        [
            click.option(
                "--next",
                "want_next",
                is_flag=True,
                help="Then claim the next run for this session in the same call, and print it "
                "as `agh agent claim` does (exit 6 when there is none).",
            ),
            click.option("--channel", metavar="NAME", help="With --next: only this channel."),
            click.option(
                "--workspace", metavar="W", help="With --next: only runs of this workspace."
            ),
            wait_option(
                "With --next: wait up to this long for a next run (the finish is done first)."
            ),
            lease_option("With --next: the next claim's lease. [default: the daemon's, 300]"),
            click.option(
                "--env",
                "as_env",
                is_flag=True,
                help="With --next: print `export AGH_…=…` lines for eval.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def next_params(
    *,
    want_next: bool,
    channel: str | None,
    workspace: str | None,
    wait: float,
    lease: float | None,
    as_env: bool,
) -> p.NextClaimParams | None:
    """The ``next`` of a finish, or None without --next; checked before the
    finish is sent, so a usage error never follows a finish already done."""
    from agh import protocol as p

    if not want_next:
        if channel or workspace or wait or lease or as_env:
            raise click.UsageError("--channel, --workspace, --wait, --lease and --env need --next")
        return None
    return p.NextClaimParams(
        network_channel=channel,
        workspace=workspace_ref(workspace),
        lease_ms=seconds_to_ms(lease),
        wait_ms=seconds_to_ms(wait) or 0,
    )


def emit_finish(result: p.FinishResult, as_json: bool, as_env: bool, chained: bool) -> None:
    """A finish's output: its lease, or with --next the next claim."""
    if not chained:
        emit_lease(result, as_json)
        return
    from agh import protocol as p

    emit_claim(result.next if isinstance(result.next, p.Claim) else None, as_json, as_env, result)


@contextmanager
def agent_connect(ctx: click.Context) -> Iterator[Client]:
    """Connect as the session of ``--session``/``$AGH_SESSION_ID`` if any."""
    session_id = ctx.params.get("session_id")
    hello: dict[str, Any] = {"session_id": session_id} if session_id else {}
    with connect(ctx, **hello) as client:
        yield client


@click.group("agent", cls=SafeGroup, read_only=("messages",))
def agent() -> None:
    """Work on runs as an agent: claim, heartbeat, log, finish.

    For shell-script agents: `agh agent claim --env` prints export lines
    for eval, after which the other commands take the run, the claim
    token and the session from AGH_RUN_ID, AGH_CLAIM_TOKEN and
    AGH_SESSION_ID. A run must be heartbeat before its lease ends, and
    finished with complete, fail or release. `agh worker` does all of
    this for a command; use these to write the loop yourself.

    Write `claimed=$(agh agent claim --env) || exit 0; eval "$claimed"`:
    `eval "$(…)"` alone succeeds even when the claim found no work.

    \b
    Example:
      claimed=$(agh agent claim --name coder --wait 30 --env) || exit 0
      eval "$claimed"
      agh agent log "starting on $AGH_TASK_ID"
      agh agent heartbeat
      agh agent complete --result '{"ok": true}'
    """


@agent.command("claim")
@click.option("--name", "agent_name", metavar="NAME", help="Claim as an agent session named NAME.")
@session_option
@click.option("--channel", metavar="NAME", help="Only runs on this network channel.")
@click.option("--workspace", metavar="W", help="Only runs of this workspace (path, id or key).")
@wait_option("Wait up to this long for work to appear (long poll).")
@lease_option("Lease length; renew it with `agh agent heartbeat`. [default: the daemon's, 300]")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Retrying with the same KEY (after a lost reply or a timeout) returns the same "
    "run with a fresh token instead of claiming another.",
)
@click.option(
    "--env",
    "as_env",
    is_flag=True,
    help="Print `export AGH_…=…` lines for eval instead of a summary.",
)
@json_option
@click.pass_context
def claim(
    ctx: click.Context,
    agent_name: str | None,
    session_id: str | None,
    channel: str | None,
    workspace: str | None,
    wait: float,
    lease: float | None,
    idempotency_key: str | None,
    as_env: bool,
    as_json: bool,
) -> None:
    """Claim the best queued run, as an agent.

    Prints the run id, the task, the claim token and when the lease ends;
    with --env, shell export lines of AGH_RUN_ID, AGH_CLAIM_TOKEN,
    AGH_TASK_ID, AGH_ATTEMPT, AGH_INPUT (JSON) and AGH_SESSION_ID. With
    --name (or --session) the run is claimed by that agent session, and
    the daemon's limit of active claims per session applies. Exits 6 with
    "no work available" on stderr when nothing is claimable within --wait
    (with --json, after printing {"claim": null}).

    With --idempotency-key, a retry of the same command with the same key
    (say, after a timeout or lost reply) gets the run it already claimed,
    under a new token that replaces the old one, rather than a second run.
    Once that claim has ended, the key is spent: use a new one.

    \b
    Example:
      agh agent claim --wait 30 --lease 600
      claimed=$(agh agent claim --name coder --env) && eval "$claimed"
      agh agent claim --idempotency-key "job-$JOB_ID" --json | jq -r .claim.claim_token
    """
    fields: dict[str, Any] = {"wait_ms": seconds_to_ms(wait) or 0}
    optional = {
        "network_channel": channel,
        "workspace": workspace_ref(workspace),
        "lease_ms": seconds_to_ms(lease),
        "idempotency_key": idempotency_key,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    hello: dict[str, Any] = {}
    if agent_name or session_id:
        hello = {"agent_name": agent_name, "session_id": session_id}
    with connect(ctx, **hello) as client:
        if client.session is not None and hello:
            fields["session_id"] = client.session.session_id
        result = client.claim_next(**fields)
    emit_claim(result.claim, as_json, as_env, result)


def emit_claim(got: p.Claim | None, as_json: bool, as_env: bool, result: Any) -> None:
    """A claim as `agh agent claim` prints it (``result`` for --json), or
    "no work available" and exit 6."""
    if as_json:
        emit_json(result)
    if got is None:
        fail("no work available", EXIT_NO_WORK)
    if as_json:
        return
    if as_env:
        click.echo(env_lines(got))
        return
    click.echo(
        format_fields(
            [
                ("run", got.run.id),
                ("task", f"{got.task.identifier}  {got.task.title}"),
                ("attempt", got.run.attempt),
                ("session", got.run.session_id),
                ("claim token", got.claim_token),
                ("lease until", f"{got.lease.lease_until} ({age(got.lease.lease_until)})"),
            ]
        )
    )


def env_lines(got: p.Claim) -> str:
    """``export NAME=value`` lines, quoted for sh, bash and zsh."""
    from agh.cli.output import json_text

    values = {
        "AGH_RUN_ID": got.run.id,
        "AGH_CLAIM_TOKEN": got.claim_token,
        "AGH_TASK_ID": got.task.id,
        "AGH_ATTEMPT": str(got.run.attempt),
        "AGH_INPUT": json_text(got.run.input),
    }
    if got.run.session_id:
        values["AGH_SESSION_ID"] = got.run.session_id
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items())


@agent.command("log")
@click.argument("message", required=False)
@held_run_options
@click.option(
    "--level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="Severity of the lines.",
)
@click.option("--step", type=click.IntRange(0), metavar="N", help="The workflow step it is about.")
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Log each line of stdin (also: MESSAGE is -)."
)
@json_option
@click.pass_context
def log(
    ctx: click.Context,
    message: str | None,
    run_id: str,
    token: str,
    session_id: str | None,
    level: str,
    step: int | None,
    from_stdin: bool,
    as_json: bool,
) -> None:
    """Append a line (or each line of stdin) to the run's log.

    `agh logs RUN` prints the log; `agh logs -f` follows it. Lines read
    from stdin are sent in batches as they arrive, so `make 2>&1 | agh
    agent log --stdin` streams a build's output into the run.

    \b
    Example:
      agh agent log "tests pass" --level info
      make test 2>&1 | agh agent log --stdin
    """
    if from_stdin or message == "-":
        lines_in: Iterator[str] = (line.rstrip("\n") for line in sys.stdin)
    elif message is not None:
        lines_in = iter([message])
    else:
        raise click.UsageError("give MESSAGE, or --stdin (or -) to log stdin's lines", ctx)
    accepted = 0
    with agent_connect(ctx) as client:
        batch: list[dict[str, Any]] = []
        for line in lines_in:
            entry: dict[str, Any] = {"level": level, "message": line}
            if step is not None:
                entry["step"] = step
            batch.append(entry)
            # Send what has arrived so far: a pipe is followed as it runs.
            if len(batch) >= 100 or not stdin_has_more():
                accepted += client.agent_log(run_id, token, batch).accepted
                batch = []
        if batch:
            accepted += client.agent_log(run_id, token, batch).accepted
    if as_json:
        emit_json({"accepted": accepted})


def stdin_has_more() -> bool:
    """Whether more of stdin is ready now (a batch may wait for it)."""
    import select

    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (OSError, ValueError):  # not a real file (click's test runner)
        return True
    return bool(ready)


@agent.command("ask")
@click.argument("question")
@held_run_options
@json_option
@click.pass_context
def ask(
    ctx: click.Context,
    question: str,
    run_id: str,
    token: str,
    session_id: str | None,
    as_json: bool,
) -> None:
    """Ask the task's people a question; the answer comes as a message.

    The task shows "awaiting input" in `agh inbox` until someone answers
    with `agh send ID TEXT`; read the answer with `agh agent messages`.

    \b
    Example:
      agh agent ask "Which branch should I base this on?"
      agh agent messages --wait 300
    """
    with agent_connect(ctx) as client:
        result = client.agent_send(run_id, token, question, "question")
    if as_json:
        emit_json(result)
        return
    click.echo(f"asked (message {result.message.id})")


@agent.command("messages")
@held_run_options
@click.option(
    "--after",
    type=click.IntRange(0),
    default=0,
    metavar="ID",
    help="Only messages after this id (the last one you read).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=0.0,
    metavar="SECONDS",
    help="Wait up to this long for a message when there is none yet.",
)
@json_option
@click.pass_context
def messages(
    ctx: click.Context,
    run_id: str,
    token: str,
    session_id: str | None,
    after: int,
    wait: float,
    as_json: bool,
) -> None:
    """Print the input sent to this run with `agh send`, oldest first.

    Text prints one message a line (newlines in a message kept as \\n);
    --json prints the result. Exits 6 when --wait ran out with nothing.

    \b
    Example:
      agh agent messages
      agh agent messages --after 12 --wait 60 --json
    """
    import time

    deadline = time.monotonic() + wait
    with agent_connect(ctx) as client:
        while True:
            result = client.agent_messages(run_id, token, after=after)
            if result.messages or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if as_json:
        emit_json(result)
    elif result.messages:
        rows = [
            (str(m.id), m.kind, age(m.created_at), m.message.replace("\n", "\\n"))
            for m in result.messages
        ]
        click.echo(format_table(("ID", "KIND", "AGE", "MESSAGE"), rows))
    if not result.messages and wait:
        fail("no message arrived in time", EXIT_NO_WORK)


def emit_lease(result: p.LeaseResult | p.FinishResult, as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        click.echo(lease_line(result.lease))


def lease_line(lease: p.Lease) -> str:
    line = f"{lease.run_id}  {lease.status}  attempt {lease.attempt}"
    if lease.lease_until and lease.status in ("claimed", "starting", "running"):
        line += f"  lease until {lease.lease_until}"
    return line


@agent.command("heartbeat")
@run_argument
@token_option
@session_option
@click.option(
    "--lease",
    type=click.FloatRange(1, 86_400),
    metavar="SECONDS",
    help="New lease length from now. [default: the length last granted]",
)
@json_option
@click.pass_context
def heartbeat(
    ctx: click.Context,
    run_id: str,
    token: str,
    session_id: str | None,
    lease: float | None,
    as_json: bool,
) -> None:
    """Extend the lease on a claimed run.

    The first heartbeat also moves the run from claimed to running. Without
    --lease the lease is extended from now by the length last granted (the
    claim's --lease, or the last heartbeat's), not by the daemon's default.

    \b
    Example:
      agh agent heartbeat --lease 600         # run and token from $AGH_RUN_ID, $AGH_CLAIM_TOKEN
      agh agent heartbeat run_01J… --token "$TOKEN"
    """
    with agent_connect(ctx) as client:
        result = client.heartbeat(run_id, token, lease_ms=seconds_to_ms(lease))
    emit_lease(result, as_json)


@agent.command("complete")
@run_argument
@token_option
@session_option
@click.option("--result", "result_", type=JSON, metavar="JSON", help="JSON result of the run.")
@next_options
@json_option
@click.pass_context
def complete(
    ctx: click.Context,
    /,
    run_id: str,
    token: str,
    session_id: str | None,
    result_: Any,
    as_json: bool,
    **chain: Any,
) -> None:
    """Mark a claimed run completed.

    With --next the same call claims the next run for this session and
    prints it as `agh agent claim` does: a shell agent's loop is then one
    command per run.

    \b
    Example:
      agh agent complete --result '{"pr": 123}'
      claimed=$(agh agent complete --next --wait 30 --env) && eval "$claimed"
    """
    chained = next_params(**chain)
    with agent_connect(ctx) as client:
        result = client.complete(run_id, token, result=result_, next=chained)
    emit_finish(result, as_json, chain["as_env"], chained is not None)


@agent.command("fail")
@run_argument
@token_option
@session_option
@click.option("--error", "error", required=True, metavar="MSG", help="What went wrong.")
@click.option(
    "--no-retry",
    is_flag=True,
    help="Fail the run and its task now, even if attempts remain.",
)
@next_options
@json_option
@click.pass_context
def fail_(
    ctx: click.Context,
    /,
    run_id: str,
    token: str,
    session_id: str | None,
    error: str,
    no_retry: bool,
    as_json: bool,
    **chain: Any,
) -> None:
    """Mark a claimed run failed (or retry it).

    The run is queued again after a backoff only while attempts remain (and
    not with --no-retry); otherwise the run and its task are failed. Tasks
    default to max_attempts 1, so by default a fail is final: create the
    task with `agh add --max-attempts N` to allow retries.

    \b
    Example:
      agh agent fail --error "tests do not pass"
      agh agent fail run_01J… --token "$TOKEN" --error "bad spec" --no-retry
    """
    chained = next_params(**chain)
    with agent_connect(ctx) as client:
        result = client.fail(run_id, token, error, retry=not no_retry, next=chained)
    emit_finish(result, as_json, chain["as_env"], chained is not None)


@agent.command("release")
@run_argument
@token_option
@session_option
@click.option("--reason", metavar="TEXT", help="Why the run is given back.")
@next_options
@json_option
@click.pass_context
def release(
    ctx: click.Context,
    /,
    run_id: str,
    token: str,
    session_id: str | None,
    reason: str | None,
    as_json: bool,
    **chain: Any,
) -> None:
    """Give a claimed run back to the queue.

    The run is queued again on the same attempt, for any agent to claim;
    with --next, the next claim is never this run.

    \b
    Example:
      agh agent release --reason "out of context"
    """
    chained = next_params(**chain)
    with agent_connect(ctx) as client:
        result = client.release(run_id, token, reason=reason, next=chained)
    emit_finish(result, as_json, chain["as_env"], chained is not None)
