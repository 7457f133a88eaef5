"""`xtalbench release <version>`: pin every dataset and DVC output, commit the pin, tag `data-<version>`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="release version, e.g. 1.0.0 (tag: data-<version>)")
    parser.add_argument("--push", action="store_true", help="run `dvc push` before tagging")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    parser.add_argument("--tag-prefix", default="data-", help="tag prefix (default: data-)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.governance.diff import DiffError
    from xtalbench.governance.release import ReleaseError, release

    try:
        pin = release(args.version, root=args.root, params_file=args.params, push=args.push, prefix=args.tag_prefix)
    except (ReleaseError, DiffError) as error:
        raise SystemExit(f"release: {error}") from None
    print(f"released {pin['tag']} at {pin['git_commit'][:12]}: releases/{args.version}.json "
          f"({len(pin['datasets'])} dataset(s), {len(pin['dvc_outs'])} DVC output(s))")
    print(f"next: git push origin {pin['tag']} && dvc push")
    return 0
