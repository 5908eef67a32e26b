"""``agh run …``: an operator's actions on one run (PROTOCOL ``runs.*``).

These act on a run by its id, with no claim token: showing it, claiming it
for someone, starting, finishing or canceling it by hand. Agents use
``agh agent …`` instead, which is fenced by the claim token. Owns: parsing
and printing for ``runs.*``. Must not: hold a lease (nothing here
heartbeats).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.group import SafeGroup
from agh.cli.names import run_agent
from agh.cli.options import (
    JSON,
    confirm_or_stop,
    json_option,
    require_confirmation,
    seconds_to_ms,
    yes_option,
)
from agh.cli.output import age, emit_json, format_fields, json_text, status_text

if TYPE_CHECKING:
    from agh import protocol as p
    from agh.client import Client

run_argument = click.argument("run_id", metavar="RUN")


@click.group("run", cls=SafeGroup, read_only=("show",))
def run() -> None:
    """Operator actions on one run: show, claim, start, finish, cancel.

    RUN is a run id (run_…) or a unique prefix of one; `agh show ID`
    lists a task's runs. These need no claim token: they are for people
    and supervisors. An agent working on a run uses `agh agent …`.

    \b
    Example:
      agh run show run_01J…
      agh run cancel run_01J… --reason "wrong branch" --yes
    """


def agent_label(run: p.Run, session: p.Session | None) -> str:
    """Who holds the run: the session's agent name, else the actor."""
    names = {}
    if session is not None and (session.agent_name or session.name):
        names[session.session_id] = str(session.agent_name or session.name)
    return run_agent(run, names) or "-"


def format_run_detail(detail: p.RunDetail) -> str:
    run_, task, stats = detail.run, detail.task, detail.summary

    def when(value: str | None) -> str | None:
        return None if value is None else f"{value} ({age(value)})"

    pairs: list[tuple[str, Any]] = [
        ("run", run_.id),
        ("task", f"{task.identifier}  {task.title}"),
        ("status", status_text(run_.status)),
        ("attempt", run_.attempt),
        ("agent", agent_label(run_, detail.session)),
        ("session", run_.session_id),
        ("channel", run_.network_channel),
        ("queued", when(run_.queued_at)),
        ("claimed", when(run_.claimed_at)),
        ("started", when(run_.started_at)),
        ("heartbeat", when(run_.heartbeat_at)),
        ("lease until", when(run_.lease_until) if run_.ended_at is None else None),
        ("ended", when(run_.ended_at)),
        ("error", run_.error),
        ("result", None if run_.result is None else json_text(run_.result)),
        (
            "activity",
            f"{stats.turn_count} turns, {stats.tool_call_count} tool calls, "
            f"{stats.total_tokens} tokens",
        ),
    ]
    return format_fields(pairs)


def emit_run(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    r = result.run
    click.echo(f"{r.id}  {status_text(r.status)}  attempt {r.attempt}")


@run.command("show")
@run_argument
@json_option
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run: its task, status, agent, lease, timings and result.

    \b
    Example:
      agh run show run_01J…
      agh run show run_01J… --json | jq .run.run.status
    """
    with connect(ctx) as client:
        show_run(client, run_id, as_json)


def show_run(client: Client, run_id: str, as_json: bool) -> None:
    """``agh show run_…``: the task command given a run id shows the run."""
    result = client.runs_get(run_id)
    if as_json:
        emit_json(result)
        return
    click.echo(format_run_detail(result.run))


@run.command("claim")
@run_argument
@click.option("--session", "session_id", metavar="ID", help="Claim for this agent session.")
@click.option(
    "--lease",
    type=click.FloatRange(1, 86_400),
    metavar="SECONDS",
    help="Lease length. [default: the daemon's, 300]",
)
@click.option("--idempotency-key", metavar="KEY", help="Retry-safe key for this claim.")
@json_option
@click.pass_context
def claim(
    ctx: click.Context,
    run_id: str,
    session_id: str | None,
    lease: float | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Claim this queued run (not the best one) and print its claim token.

    \b
    Example:
      agh run claim run_01J… --lease 600
      agh run claim run_01J… --json | jq -r .claim_token
    """
    fields = {
        "session_id": session_id,
        "lease_ms": seconds_to_ms(lease),
        "idempotency_key": idempotency_key,
    }
    with connect(ctx) as client:
        result = client.runs_claim(run_id, **{k: v for k, v in fields.items() if v is not None})
    if as_json:
        emit_json(result)
        return
    click.echo(
        format_fields(
            [
                ("run", result.run.id),
                ("status", result.run.status),
                ("claim token", result.claim_token),
                ("lease until", result.lease.lease_until),
            ]
        )
    )


@run.command("start")
@run_argument
@click.option("--idempotency-key", metavar="KEY", help="Retry-safe key for this start.")
@json_option
@click.pass_context
def start(ctx: click.Context, run_id: str, idempotency_key: str | None, as_json: bool) -> None:
    """Mark a claimed run as starting: its agent is being launched.

    \b
    Example:
      agh run start run_01J…
    """
    fields = {} if idempotency_key is None else {"idempotency_key": idempotency_key}
    with connect(ctx) as client:
        result = client.runs_start(run_id, **fields)
    emit_run(result, as_json)


@run.command("complete")
@run_argument
@click.option("--result", "result_", type=JSON, metavar="JSON", help="JSON result of the run.")
@yes_option
@json_option
@click.pass_context
def complete(ctx: click.Context, run_id: str, result_: Any, yes: bool, as_json: bool) -> None:
    """Mark a claimed or running run completed by hand, with a JSON result.

    Overrides the agent holding it, which gets lease_lost on its next
    call. Without --yes, asks first; when stdin is not a terminal, --yes
    is required (exit 2 without it).

    \b
    Example:
      agh run complete run_01J… --result '{"done_by": "hand"}' --yes
    """
    with connect(ctx) as client:
        confirm_override(ctx, client, run_id, yes, "complete")
        result = client.runs_complete(run_id, result=result_)
    emit_run(result, as_json)


@run.command("fail")
@run_argument
@click.option("--error", metavar="MSG", required=True, help="What went wrong.")
@yes_option
@json_option
@click.pass_context
def fail(ctx: click.Context, run_id: str, error: str, yes: bool, as_json: bool) -> None:
    """Mark a claimed or running run failed by hand (no retry).

    Overrides the agent holding it, which gets lease_lost on its next
    call. Without --yes, asks first; when stdin is not a terminal, --yes
    is required (exit 2 without it).

    \b
    Example:
      agh run fail run_01J… --error "agent crashed, giving up" -y
    """
    with connect(ctx) as client:
        confirm_override(ctx, client, run_id, yes, "fail")
        result = client.runs_fail(run_id, error=error)
    emit_run(result, as_json)


def confirm_override(ctx: click.Context, client: Client, run_id: str, yes: bool, verb: str) -> None:
    """Ask before ending a run by hand, naming who holds it."""
    if not require_confirmation(ctx, yes, f"{verb} run {run_id} by hand"):
        return
    detail = client.runs_get(run_id).run
    confirm_or_stop(
        f"{verb.capitalize()} run {detail.run.id} of {detail.task.identifier} "
        f"({detail.run.status}, agent {agent_label(detail.run, detail.session)})?",
        f"run {run_id} left as it is",
    )


@run.command("cancel")
@run_argument
@click.option("--reason", metavar="TEXT", help="Why; recorded on the run.")
@yes_option
@json_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, reason: str | None, yes: bool, as_json: bool) -> None:
    """Cancel one run; its agent gets lease_lost on its next call.

    Without --yes, asks first; when stdin is not a terminal, --yes is
    required (exit 2 without it).

    \b
    Example:
      agh run cancel run_01J… --reason "wrong branch" --yes
    """
    with connect(ctx) as client:
        confirm_override(ctx, client, run_id, yes, "cancel")
        result = client.runs_cancel(run_id, reason=reason)
    emit_run(result, as_json)
