"""`nvcf-lite models|resources push|list|show|remove`: the model store in the server's data_dir.

The same store as `PUT|GET|DELETE /v2/nvcf-lite/models|resources/...`, written directly (like
`keys`): a server running on the same data_dir sees a push at once. `push NAME VERSION PATH`
copies the folder (or the one file) PATH; a function mounts it read-only at
`/config/models/NAME` (or `/config/resources/NAME`) when its models[] (resources[]) entry
names it, by name and version or by the uri `nvcf-lite://models/NAME/VERSION`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from nvcf_lite.commands.database import run_on_database
from nvcf_lite.config import Config, ConfigSource
from nvcf_lite.domain.artifact_refs import store_uri
from nvcf_lite.domain.artifacts import Artifacts, deployed_versions
from nvcf_lite.models import Artifact, ArtifactKind
from nvcf_lite.store.artifact_files import LOCK, ArtifactFiles
from nvcf_lite.store.artifacts import ArtifactsRepo
from nvcf_lite.store.data_dir import ARTIFACTS_DIR, BLOBS_DIR, MODEL_BLOBS_DIR, give_to_owner
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sealing import KEY_FILE as SECRETS_KEY_FILE
from nvcf_lite.store.sealing import SecretBox
from nvcf_lite.store.sqlite import Database

VERBS = {k.plural: k for k in ArtifactKind}


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    for plural, kind in VERBS.items():
        verb = sub.add_parser(
            plural,
            parents=[common],
            help=f"push, list, show, remove {plural} in the model store (mounted read-only at "
            f"/config/{plural}/NAME)",
        )
        acts = verb.add_subparsers(dest="store_command", required=True, metavar="ACTION")
        push = acts.add_parser(
            "push", parents=[common], help=f"store the folder or file PATH as a {kind} version"
        )
        push.add_argument("name", metavar="NAME")
        push.add_argument("version", metavar="VERSION")
        push.add_argument("path", metavar="PATH", type=Path)
        acts.add_parser("list", parents=[common], help=f"list the stored {plural}")
        for action, what in (
            ("show", "print a version's files with their sha256 and size"),
            ("remove", "remove a version (refused while a deployed function mounts it)"),
        ):
            one = acts.add_parser(action, parents=[common], help=what)
            one.add_argument("name", metavar="NAME")
            one.add_argument("version", metavar="VERSION")


def run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    return run_on_database(source, config, lambda db: _act(config, db, VERBS[args.command], args))


async def _act(config: Config, db: Database, kind: ArtifactKind, args: argparse.Namespace) -> int:
    data = config.data_path
    # the server's own secrets key (the database exists, so this is its data_dir; the first
    # writer of secrets.key wins), though listing deployed versions opens no secret
    box = await asyncio.to_thread(SecretBox.in_data_dir, data)
    give_to_owner(data, data / SECRETS_KEY_FILE)
    store = Artifacts(
        db,
        ArtifactsRepo(db),
        ArtifactFiles(data),
        deployed_versions(DeploymentsRepo(db), FunctionsRepo(db, box)),
        max_push_bytes=config.models.max_push_bytes,
    )
    action = args.store_command
    if action == "push":
        pushed = await store.push_path(kind, args.name, args.version, args.path)
        blobs = [data / MODEL_BLOBS_DIR / f.sha256 for f in pushed.files or ()]
        folders = [data / BLOBS_DIR, data / BLOBS_DIR / "models", data / MODEL_BLOBS_DIR]
        lock = data / ARTIFACTS_DIR / LOCK
        give_to_owner(data, *folders, data / ARTIFACTS_DIR, lock, *blobs)  # root pushed it
        print(_line(pushed))
    elif action == "list":
        for artifact in await store.of_kind(kind):
            print(_line(artifact))
    elif action == "show":
        artifact = await store.get(kind, args.name, args.version)
        print(_line(artifact), file=sys.stderr)
        for f in artifact.files or ():
            mode = "x" if f.executable else "-"
            print(f"{f.sha256}  {f.size_bytes:>12}  {mode}  {f.path}")
    else:
        removed = await store.remove(kind, args.name, args.version)
        print(f"removed {removed.kind} {removed.name} {removed.version}")
    return 0


def _line(a: Artifact) -> str:
    uri = store_uri(a.kind, a.name, a.version)
    return (
        f"{a.name}  {a.version}  {a.size_bytes} bytes  {a.file_count} file(s)  sha256 {a.sha256}"
        f"  {uri}  created {a.created_at}"
    )
