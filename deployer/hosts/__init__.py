"""Host deploys over SSH: connection (keys, known_hosts, jump host, retries), commands (pure
builders), release (probe → act per host), fleet (parallel, summary).

paramiko imports invoke, if it is installed, only for ssh_config's `Match exec`. deployer loads
no ssh_config, and that import costs about 0.1 s of every run's start (invoke pulls in
unittest.mock and asyncio). So, unless something in this process already imported invoke, it
is marked absent before paramiko loads: paramiko then leaves `Match exec` unsupported, which it
is here anyway.
"""

import sys

sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
