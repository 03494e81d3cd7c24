"""balena Supervisor, reimplemented in Python: a device agent that reconciles containers."""

__version__ = "0.1.0"
# The version reported to clients (balena-cli requires >= 7.21.4 for local push): we speak
# the wire protocol of upstream v19.0.5.
COMPAT_VERSION = "19.0.5"
