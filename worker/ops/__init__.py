"""Operations: what the on-call engineer and the finance clerk run next to the worker.

Dead-letter tooling and trace (`huimin-worker dlq ...`, `huimin-worker trace KEY`):

    dead_letters  a dead-lettered message read into what an operator needs (pure)
    broker        the dead-letter queue over py-amqp: browse without losing, ack, publish
    dlq           list, show, purge and the audit history
    replay        replay dead letters to their work queues, at most once per message
    trace         an event's timeline from the ledger
    render        masking personal data and formatting for the terminal
    recheck       ask the platform again about an outcome left `unknown` (`recheck EVENT_ID`)
    memory_dlq    the dead-letter queue of the in-memory broker, for the demo and tests

The daily statement's reconciliation lives in worker/statement/.

The CLI modules only parse arguments and print; everything here takes its Settings, ledger and
clock explicitly.
"""
