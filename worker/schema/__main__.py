"""`python -m worker.schema --write|--check schemas/`: the contract files from the code."""

from worker.schema.generate import main

raise SystemExit(main())
