"""The event pipeline: intake, the processor's decisions, money calls, the sweeper, and the
engine that runs them on a broker transport."""
