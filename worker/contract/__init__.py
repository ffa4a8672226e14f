"""The HIS contract, pure: events in, results out, and the checks on identifiers before they reach
a header, SQL or a log. `worker.schema` writes it down as files."""
