"""``topo-prune install-topology``: build dionysus for the topology cross-check engines."""

from __future__ import annotations

import argparse

NAME = "install-topology"
HELP = ("build dionysus from source (and, as root on Debian/Ubuntu, apt-get its compiler and Boost headers), or "
        "print the steps this platform needs; only topo_engine=fast|classic (the cross-check engines) need it")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requirement", help="what pip installs (default dionysus==2.2.3)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true",
                        help="only print what is found and what would run")
    parser.add_argument("pip_options", nargs="*", metavar="-- PIP_OPTION",
                        help="extra `pip install` options, after -- (e.g. -- --no-deps)")


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.tools.install_topology import install_topology

    return install_topology(args.requirement, args.pip_options, dry_run=args.dry_run)
