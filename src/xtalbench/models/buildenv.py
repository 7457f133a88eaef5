"""`python -m xtalbench.models.buildenv build|list [MODEL ...]`: build or list model environments."""

from __future__ import annotations

import sys

from xtalbench.core.errors import XtalbenchError
from xtalbench.models.env import Environment, build_environment, is_built


def main(argv: list[str] | None = None) -> int:
    """`python -m xtalbench.models.buildenv build [MODEL ...]` (default: every model with an environment)."""
    import argparse

    from xtalbench.models.registry import MODELS_DIR, load_all, load_spec

    parser = argparse.ArgumentParser(prog="python -m xtalbench.models.buildenv", description=main.__doc__)
    parser.add_argument("action", choices=["build", "path", "list"])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--models-dir", default=str(MODELS_DIR))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    specs = [load_spec(m, args.models_dir) for m in args.models] if args.models else list(load_all(args.models_dir).values())
    envs: dict[str, tuple[Environment, list[str]]] = {}
    for spec in specs:
        if spec.environment is not None:
            envs.setdefault(spec.environment.key(), (spec.environment, []))[1].append(spec.name)
    try:
        for env, names in envs.values():
            if args.action == "build":
                build_environment(env, force=args.force)
            else:
                print(f"{env.path()}\t{'built' if is_built(env) else 'not built'}\t{','.join(names)}")
    except XtalbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
