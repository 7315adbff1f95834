#!/usr/bin/env python3
# A command-line program: what it prints is its output.
# ruff: noqa: T201
"""The jump's setup: stand-ins for the steps of CSO's setup.sh, run by jump/setup.sh. Each step
is idempotent and reports `changed` or `unchanged`, and why.

    python3 jump/quicksetup.py [--properties PATH] [--home DIR]

--properties  default: quickSetup.properties in the release directory (rendered by deployer)
--home        default: $HOME

1. read quickSetup.properties strictly (key=value lines, never sourced or evaluated)
2. extract the install scripts: the roles' *.sh and *.py into ~/cso/scripts/<dir>/
3. generate the internal TLS certificates: NOT X.509 (no openssl, no `cryptography` here). A
   random internal CA id, made once (~/cso/pki/ca.json), and a manifest naming each host's
   certificate names (~/cso/pki/certificates.json). No key, no certificate.
4. create the database schemas: the database is RDS, which the sandbox cannot reach: the
   schemas (keystone, cso) are recorded in ~/cso/schemas.json, not created
5. signal setup complete: ~/.setup-done holds the release and a SHA-256 of the properties
   without the secret values

Exit status: 0 done, 1 a bad or missing key or a step that failed (one line on stderr), 2 usage.
Secret values are never printed, and never reach the marker or its hash.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import re
import secrets
import sys
from pathlib import Path

RELEASE_DIR = Path(__file__).resolve().parent.parent
KEYS = ("topology", "dns_zone", "db_address", "db_password", "rabbitmq_password",
        "keystone_admin_password", "frontend_hosts", "backend_hosts", "keystone_hosts",
        "rabbitmq_hosts")
SECRET_KEYS = frozenset({"db_password", "rabbitmq_password", "keystone_admin_password"})
ROLES = ("rabbitmq", "keystone", "frontend", "backend")  # each has a <role>_hosts key
SCRIPT_DIRS = ("jump", "lib", *ROLES)
SCHEMAS = ("keystone", "cso")
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
RELEASE = re.compile(r"[A-Za-z0-9._-]{1,128}")
CA_ID = re.compile(r"cso-ca-[0-9a-f]{32}")
DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r"\\(.)")
NOT_X509 = ("a stand-in: NOT X.509. No key and no certificate exist; this names what each host's"
            " certificate would carry.")


class Bad(Exception):
    """A bad input or a failed step: the message is the one line printed (exit status 1)."""


# --- quickSetup.properties ----------------------------------------------------------------------

def unquote(value, where, key):
    """A value as deployer's env format writes it (double-quoted, \\" \\\\ \\$ \\` escaped) or
    bare and taken literally. A bare value with a double quote or a backslash is refused: it
    would mean different things to different readers."""
    if value.startswith('"'):
        quoted = DOUBLE_QUOTED.fullmatch(value)
        if not quoted:
            raise Bad(f"{where}: {key}: an unterminated or malformed quoted value")
        return ESCAPE.sub(lambda m: m[1] if m[1] in '"\\$`' else m[0], quoted[1])
    if '"' in value or "\\" in value:
        raise Bad(f"{where}: {key}: a double quote or backslash in a bare value; quote it")
    return value


def read_properties(path):
    """key=value lines; blank lines and lines starting with # or ! are comments. Every key of
    KEYS exactly once and no other. Error messages name keys and lines, never values."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Bad(f"{path}: missing (deployer renders it from jump/quickSetup.properties.j2)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Bad(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    values = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r").strip(" \t")
        if not line or line[0] in "#!":
            continue
        where = f"{path.name}:{number}"
        key, eq, value = line.partition("=")
        key = key.strip(" \t")
        if not eq:
            raise Bad(f"{where}: not key=value")
        if key not in KEYS:
            raise Bad(f"{where}: unknown key {key[:40]!r} (known: {', '.join(KEYS)})")
        if key in values:
            raise Bad(f"{where}: {key} is given twice")
        values[key] = unquote(value.strip(" \t"), where, key)
    missing = [k for k in KEYS if k not in values]
    if missing:
        raise Bad(f"{path.name}: missing key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return values


def check(values):
    """The values' meaning: {role: [private IPs]}; Bad naming the first problem."""
    for key in KEYS:
        if not values[key].strip():
            raise Bad(f"quickSetup.properties: {key} is empty")
    topology = values["topology"]
    if topology not in ("single", "ha"):
        raise Bad(f"quickSetup.properties: topology {topology[:20]!r} is not single or ha")
    if not HOSTNAME.fullmatch(values["dns_zone"].rstrip(".")):
        raise Bad(f"quickSetup.properties: dns_zone {values['dns_zone'][:80]!r} is not a DNS name")
    db_host, colon, db_port = values["db_address"].partition(":")
    if not HOSTNAME.fullmatch(db_host) or (colon and not (db_port.isdigit() and 0 < int(db_port) < 65536)):
        raise Bad(f"quickSetup.properties: db_address {values['db_address'][:80]!r} is not host[:port]")
    hosts = {}
    for role in ROLES:
        key, words = f"{role}_hosts", values[f"{role}_hosts"].split()
        for word in words:
            try:
                ipaddress.IPv4Address(word)
            except ValueError:
                raise Bad(f"quickSetup.properties: {key}: {word[:40]!r} is not an IPv4 address") from None
        if len(set(words)) != len(words):
            raise Bad(f"quickSetup.properties: {key} lists an address twice")
        if topology == "single" and len(words) != 1:
            raise Bad(f"quickSetup.properties: {key}: the single topology has one {role} host,"
                      f" not {len(words)}")
        if topology == "ha" and len(words) < 2:
            raise Bad(f"quickSetup.properties: {key}: the ha topology needs two {role} hosts,"
                      f" not {len(words)}")
        hosts[role] = words
    return hosts


def public_hash(values):
    """SHA-256 of the properties without the secret values: it changes when the layout does,
    and says nothing about a password."""
    public = {k: v for k, v in values.items() if k not in SECRET_KEYS}
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


# --- writing, idempotently -------------------------------------------------------------------------

def write_if_changed(path, data, mode=0o644):
    """True when the file had to be (re)written: written aside and renamed, so a half-written
    file never counts."""
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data \
                and path.stat().st_mode & 0o777 == mode:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise Bad(f"cannot write {path}: {exc.strerror or exc}") from None
    return True


def as_json(document):
    return (json.dumps(document, indent=2) + "\n").encode()


def report(step, changed, why):
    print(f"{step}: {'changed' if changed else 'unchanged'} ({why})", flush=True)


def listed(names, most=4):
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# --- the steps -----------------------------------------------------------------------------------------

def extract_scripts(target):
    """The roles' scripts (*.sh, *.py) into target/<dir>/, keeping whether each is executable;
    files there that the release does not ship are removed. The rendered configs (with their
    passwords) and the templates are not scripts: they stay in the release."""
    shipped = {}
    for folder in SCRIPT_DIRS:
        for source in sorted((RELEASE_DIR / folder).glob("*")):
            if source.is_file() and source.suffix in (".sh", ".py"):
                shipped[f"{folder}/{source.name}"] = source
    written = [rel for rel, source in shipped.items()
               if write_if_changed(target / rel, source.read_bytes(),
                                   0o755 if os.access(source, os.X_OK) else 0o644)]
    removed = []
    if target.is_dir():
        for path in sorted(target.rglob("*")):
            rel = path.relative_to(target).as_posix()
            if (path.is_file() or path.is_symlink()) and rel not in shipped:
                path.unlink()
                removed.append(rel)
    if written or removed:
        why = [f"wrote {len(written)} to {target}: {listed(written)}"] if written else []
        why += [f"removed {len(removed)} no longer shipped: {listed(removed)}"] if removed else []
        return True, "; ".join(why)
    return False, f"the {len(shipped)} scripts in {target} are current"


def certificates(pki, values, hosts):
    ca_file, ca_id = pki / "ca.json", None
    try:
        ca_id = json.loads(ca_file.read_text(encoding="utf-8")).get("ca_id")
    except (OSError, ValueError, AttributeError):
        pass
    new_ca = not (isinstance(ca_id, str) and CA_ID.fullmatch(ca_id))
    if new_ca:
        ca_id = "cso-ca-" + secrets.token_hex(16)
        write_if_changed(ca_file, as_json({"ca_id": ca_id, "x509": False, "note": NOT_X509}))
    zone = values["dns_zone"].rstrip(".").lower()
    entries = {}
    for role in ROLES:
        for number, ip in enumerate(hosts[role], 1):
            entry = entries.setdefault(ip, {"host": ip, "roles": [], "names": []})
            entry["roles"].append(role)
            for name in (f"{role}-{number}.{zone}", f"{role}.{zone}", ip):
                if name not in entry["names"]:
                    entry["names"].append(name)
    for entry in entries.values():
        entry["serial"] = hashlib.sha256(f"{ca_id} {' '.join(entry['names'])}".encode()).hexdigest()[:16]
    manifest = pki / "certificates.json"
    changed = write_if_changed(manifest, as_json({"ca_id": ca_id, "x509": False, "note": NOT_X509,
                                                  "certificates": list(entries.values())}))
    what = (f"{'a new' if new_ca else 'the'} internal CA id {ca_id}, names for {len(entries)} hosts"
            f" in {manifest}")
    return new_ca or changed, f"a stand-in, NOT X.509: no key or certificate is made; {what}"


def schemas(path, values):
    document = {"database": values["db_address"], "schemas": list(SCHEMAS), "created": False,
                "note": "RDS is not reachable from the sandbox: these schemas are recorded, not created"}
    changed = write_if_changed(path, as_json(document))
    return changed, (f"recorded {', '.join(SCHEMAS)} for {values['db_address']} in {path}; the database"
                     " is RDS, not reachable from the sandbox: nothing was created")


def marker(path, release, digest):
    changed = write_if_changed(path, f"release={release}\nproperties_sha256={digest}\n".encode())
    return changed, f"{path}: release {release}, properties {digest[:12]}"


# --- the command line ----------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"quicksetup.py: {message}\n")


def main(argv=None):
    parser = Parser(prog="quicksetup.py", description="The jump's setup (stand-ins).")
    parser.add_argument("--properties", type=Path, default=RELEASE_DIR / "quickSetup.properties")
    parser.add_argument("--home", type=Path, default=None, help="default: $HOME")
    args = parser.parse_args(argv)
    home = args.home or Path(os.environ.get("HOME") or Path.home())
    release = os.environ.get("DEPLOY_RELEASE") or RELEASE_DIR.name
    try:
        if not RELEASE.fullmatch(release):
            raise Bad(f"unexpected release name {release[:60]!r}")
        values = read_properties(args.properties)
        hosts = check(values)
        count = len({ip for ips in hosts.values() for ip in ips})
        print(f"read {args.properties.name}: ok (topology {values['topology']}, zone"
              f" {values['dns_zone']}, {count} hosts)", flush=True)
        if args.properties.stat().st_mode & 0o077:
            print(f"warning: {args.properties} can be read by others and holds passwords:"
                  " deployer uploads it 0600 when the stack marks it secret", flush=True)
        cso = home / "cso"
        report("extract the install scripts", *extract_scripts(cso / "scripts"))
        report("generate the internal TLS certificates", *certificates(cso / "pki", values, hosts))
        report("create the database schemas", *schemas(cso / "schemas.json", values))
        report("signal setup complete", *marker(home / ".setup-done", release, public_hash(values)))
    except Bad as exc:
        print(f"setup.sh: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
