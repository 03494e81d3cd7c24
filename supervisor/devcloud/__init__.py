"""devcloud: a small fleet server for tests and local development fleets.

It speaks the part of the balena cloud API the agent uses (registration, key exchange, target
state with ETags, state and tag reports, log stream) plus the supervisor API proxy, and keeps
fleets, releases, devices and variables in SQLite. The agent never imports this package.
"""
