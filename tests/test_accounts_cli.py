"""`nvcf-lite accounts create|list` and `keys create --account/--team` on a real database, and
the keys they make working against the app (spec §6.4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import bearer, make_config
from litestar.testing import TestClient
from test_cli import in_data


def test_accounts_and_keys_of_an_account_and_team(
    tmp_path: Path, app_factory: Callable[..., TestClient[Any]]
) -> None:
    assert in_data(tmp_path, "migrate").returncode == 0
    listed = in_data(tmp_path, "accounts", "list")
    assert listed.returncode == 0, listed.stderr
    assert "nvcf-lite-local  org=local" in listed.stdout and "(configured)" in listed.stdout

    made = in_data(tmp_path, "accounts", "create", "--nca-id", "nca-lab", "--org-name", "lab")
    assert made.returncode == 0 and made.stdout.strip() == "account nca-lab org lab"
    again = in_data(tmp_path, "accounts", "create", "--nca-id", "nca-2", "--org-name", "lab")
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = in_data(tmp_path, "accounts", "create", "--nca-id", "x", "--org-name", "a/b")
    assert bad.returncode == 1 and "invalid org name" in bad.stderr
    unknown = in_data(tmp_path, "keys", "create", "--account", "nowhere", "--scope", "all")
    assert (
        unknown.returncode == 1 and "no account with org name or NCA id 'nowhere'" in unknown.stderr
    )

    done = in_data(
        tmp_path, "keys", "create", "--account", "lab", "--team", "blue", "--scope", "all"
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert "account nca-lab (org lab), teams blue" in done.stderr
    keys = in_data(tmp_path, "keys", "list").stdout
    assert "account=nca-lab  teams=blue" in keys

    client = app_factory(make_config(tmp_path / "data"))
    assert client.get("/v2/orgs/lab/teams/blue/nvcf/functions", headers=bearer(key)).json() == {
        "functions": []
    }
    assert (
        client.get("/v2/orgs/lab/teams/red/nvcf/functions", headers=bearer(key)).status_code == 403
    )
    assert client.get("/v2/orgs/local/nvcf/functions", headers=bearer(key)).status_code == 404
    info = client.post("/v3/keys/get-caller-info", data={"credentials": key}).json()
    assert (info["orgName"], info["ncaId"]) == ("lab", "nca-lab")
