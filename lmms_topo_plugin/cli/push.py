"""``topo-prune push``: publish an export and its generated model card to the Hub in one commit."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "push"
HELP = ("publish an export (checkpoint, onnx/, plots, reports) and its generated "
        "model card to the Hugging Face Hub in one commit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", help="a directory written by topo-prune export")
    parser.add_argument("--repo-id", "--repo_id", required=True, help="<user or organisation>/<name>")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--exist-ok", "--exist_ok", action="store_true",
                      help="push to a repository that already has files (its files the build lacks are deleted)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true",
                      help="write the card to BUILD/README.md, print the files and the commit message; send nothing")
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored `hf auth login` token)")
    parser.add_argument("--revision", default="main", help="branch to commit to (it must exist)")
    parser.add_argument("--commit-message", "--commit_message", help="default: what was removed, by which method")
    parser.add_argument("--license", help="license id for the card (default: the base model card's; required "
                      "when that states none)")
    parser.add_argument("--base-model", "--base_model", metavar="ID", help="the base model's Hub id "
                      "(<user or organisation>/<name>) for the card's base_model metadata, or none to publish "
                      "without it (default: the pruning record's base when it is a Hub id; required when the base "
                      "is a local directory or the bundled default model)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.exporters.hub import PushRequest, push

    result = push(PushRequest(
        build=Path(args.build), repo_id=args.repo_id, private=args.private, exist_ok=args.exist_ok,
        dry_run=args.dry_run, endpoint=args.endpoint, token=args.token, revision=args.revision,
        commit_message=args.commit_message, license=args.license, base_model=args.base_model))
    if result["commit_url"]:
        print(f"pushed: {result['commit_url']}")
    return 0
