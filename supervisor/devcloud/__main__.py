"""`python -m supervisor.devcloud ...` = `balena-supervisor devcloud ...`."""

import sys

from supervisor.devcloud.cli import main

sys.exit(main())
