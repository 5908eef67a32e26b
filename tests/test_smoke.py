from __future__ import annotations

from agh.client import Client


def test_create_claim_complete(client: Client) -> None:
    created = client.tasks_create("smoke", start=True)
    assert created.run is not None and created.run.status == "queued"
    with Client(client.socket_path, agent_name="smoke-agent") as agent:
        claim = agent.claim_next().claim
        assert claim is not None and claim.run.id == created.run.id
        done = agent.complete(claim.run.id, claim.claim_token, result={"ok": True})
        assert done.lease.status == "completed"
    assert client.tasks_get(created.task.id).task.task.status == "completed"
