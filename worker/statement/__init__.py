"""The daily statement (HOS00013): the file format, its download, the reconciliation against
the ledger, and the job that runs it."""
