"""The contract files (schemas/: JSON Schemas + AsyncAPI), generated from the code enforcing them.

    python -m worker.schema --write schemas/   regenerate every file
    python -m worker.schema --check schemas/   exit 1, naming each stale file

It sits above the packages it describes (contract, broker topology, gateway, statement).
"""
