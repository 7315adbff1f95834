"""Provisioning, pure parts: rendering a role's files and units, and pinned versions. Its shell
is tested with the other builders in test_hosts_commands.py; the steps themselves run on real
machines in tests/test_chom.py (they create users and install packages, which this machine must
not get)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.hosts import provision
from deployer.stacks import Provision, ProvisionDir, ProvisionFile, ProvisionUnit

REPO = Path(__file__).resolve().parent.parent


def test_render_reads_templates_and_sources_and_names_the_deploy_user(tmp_path: Path) -> None:
    (tmp_path / "t.env.j2").write_text("DOMAIN={{ domain }}\n")
    (tmp_path / "s.py").write_bytes(b"print('x')\n")
    (tmp_path / "u.service.j2").write_text("[Service]\nUser={{ deploy_user }}\n")
    spec = Provision(
        packages=("nginx",), dirs=(ProvisionDir("/var/www/app", "deploy"),),
        files=(ProvisionFile("/srv/.env", template="t.env.j2", owner="deploy", mode="0600",
                             format="env", reload=("app",)),
               ProvisionFile("/opt/s.py", source="s.py", mode="0755")),
        units=(ProvisionUnit("app", "u.service.j2", start=False),))
    wanted = provision.render(spec, tmp_path, {"domain": "a b", "deploy_user": "stilgar"}, "stilgar")
    assert wanted.dirs == (("/var/www/app", "0755", "stilgar"),)
    assert wanted.files["/srv/.env"] == (b'DOMAIN="a b"\n', "0600", "stilgar", ("app",))
    assert wanted.files["/opt/s.py"] == (b"print('x')\n", "0755", "root", ())
    assert wanted.units["app"] == (b"[Service]\nUser=stilgar\n", False)


@pytest.mark.parametrize(("have", "pinned", "ok"), [
    ("1.22.1-9", "1.22.1-9", True), ("1.22.1-9", "1.22.*", True), ("1.24.0-1", "1.22.*", False),
])
def test_pinned_versions(have: str, pinned: str, ok: bool) -> None:
    assert provision._version_matches(have, pinned) is ok
