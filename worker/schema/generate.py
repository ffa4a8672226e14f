"""The contract with the HIS as files, generated from the code that enforces it. Pure.

    python -m worker.schema --write schemas/   regenerate every file
    python -m worker.schema --check schemas/   exit 1, naming each stale file

JSON Schemas (draft 2020-12, worker.schema.json_schemas) come from the same pydantic models
`worker.contract.events.prepare` validates with, so they cannot drift. They differ from the
code in two known ways: formats held in custom validators (yyyyMMdd dates, amounts written as
digits) are not in a schema, and the worker reads "" in an optional field as absent where a
schema wants it left out. The AsyncAPI 3.0.0 document (worker.schema.asyncapi) takes its names
(exchanges, routing keys, queues, headers) from `worker.broker.topology`. This module renders
them all and compares: output is deterministic (sorted JSON keys, fixed examples, trailing
newline), so the staleness check is an exact compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.gateway import contract as gateway_contract
from worker.protocol.registry import EVENT_TYPES
from worker.schema import asyncapi
from worker.schema.json_schemas import (
    BASE_URI,
    DIALECT,
    RESULT_FILE,
    SETTINGS_FILE,
    Schema,
    event_file,
    event_schema,
    result_schema,
    settings_schema,
)
from worker.schema.yaml_writer import to_yaml

REGENERATE = "python -m worker.schema --write schemas/"
ASYNCAPI_FILE = "asyncapi.yaml"


# --- rendering ------------------------------------------------------------------------------


def to_json(schema: Schema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """Every generated file under schemas/, by relative path."""
    files = {event_file(name): to_json(event_schema(name)) for name in EVENT_TYPES}
    files.update(gateway_contract.schema_files(BASE_URI, DIALECT, to_json))
    files[RESULT_FILE] = to_json(result_schema())
    files[SETTINGS_FILE] = to_json(settings_schema())
    files[ASYNCAPI_FILE] = to_yaml(asyncapi.document())
    return files


# --- command line ---------------------------------------------------------------------------


def stale_files(directory: Path, files: Mapping[str, str] | None = None) -> list[str]:
    """Relative paths that differ from `files`, are missing, or are generated but orphaned."""
    expected = generate() if files is None else files
    stale = [
        path
        for path, text in expected.items()
        if not (directory / path).is_file() or (directory / path).read_text("utf-8") != text
    ]
    # a schema left behind by a removed event type would still look like a contract
    for sub in ("events", "results", "platform"):
        found = (f"{sub}/{p.name}" for p in sorted((directory / sub).glob("*.json")))
        stale += [path for path in found if path not in expected]
    return stale


def write(directory: Path) -> list[str]:
    """Bring `directory` up to date; returns what changed."""
    files = generate()
    changed = stale_files(directory, files)
    for path in changed:
        target = directory / path
        if path not in files:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[path], encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.schema",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", type=Path, help="regenerate the files in DIR")
    mode.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if DIR is stale")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.write)
        print(f"{len(changed)} file(s) updated under {args.write}: {', '.join(changed) or '-'}")
        return 0
    stale = stale_files(args.check)
    for path in stale:
        print(f"stale: {args.check / path}", file=sys.stderr)
    if stale:
        print(f"regenerate with: {REGENERATE}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
