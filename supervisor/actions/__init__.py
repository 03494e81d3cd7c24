"""API actions as intents (DESIGN.md "actions are intents").

Each action validates its request (upstream's 4xx texts), records an intent with the
reconciler (`Reconciler.submit`), and awaits the future the loop resolves once the intent is
carried out or fails. No module here calls a mutating engine method or builds an executor:
the planner turns the intents into steps and the one executor runs them.

- `apps.py`: restart, purge, service stop/start/restart, v1 stop/start (api.md §3.5-3.6, §4-5)
- `device.py`: reboot/shutdown preparation, host config, update triggers (api.md §3.7-3.12)
- `volumes.py`: `GET /v2/cleanup-volumes` (api.md §4.16)
- `ports.py`: the one narrow Protocol through which the actions see the device
- `gate.py`: one action per app at a time (upstream's in-process lock); update lock files for
  device-wide actions that touch no container (host-config) or hold every app (reboot)
"""
