"""Operations: what the on-call engineer and the finance clerk run next to the worker.

Dead-letter tooling and trace (`huimin-worker dlq ...`, `huimin-worker trace KEY`):

    dead_letters  a dead-lettered message read into what an operator needs (pure)
    broker        the dead-letter queue over py-amqp: browse without losing, ack, publish
    dlq           list, show, purge and the audit history
    replay        replay dead letters to their work queues, at most once per message
    trace         an event's timeline from the ledger
    render        masking personal data and formatting for the terminal

Statement reconciliation (`statement_recon`, ...): the platform's daily statement against the
ledger.

The CLI modules only parse arguments and print; everything here takes its Settings, ledger and
clock explicitly.
"""
