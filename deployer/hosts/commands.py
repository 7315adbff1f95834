"""Pure builders: each returns the shell command a step runs on a host, and runs nothing.

Every path argument is absolute (the caller resolves the remote $HOME once) and quoted. No
secret ever appears in a command: rendered files travel on a command's stdin
(`receive_file`). No value is ever run as code:
git gets `--` before its operands and only the https, ssh and file transports, and the
fallback supervisor reads env files with a strict reader instead of sourcing them.
"""

from __future__ import annotations

import os
import shlex

q = shlex.quote

# Every git command: only these transports (never `ext::` or `fd::`, which run commands), and
# no prompt for credentials (nobody is there to answer; it would hang until the timeout).
GIT = "GIT_ALLOW_PROTOCOL=https:ssh:file GIT_TERMINAL_PROMPT=0 git"
LOCK_DIR = ".deploy-lock"
# Exit codes between the builders and the runner (release.py): what a command's exit means.
LOCK_HELD = 3  # the deploy lock is someone else's; its holder is on stdout
STAGE_FAILED = 4  # building the new release directory failed; the reason is on stderr
LOCK_MOVED = 5  # breaking a stale lock found it already gone, or no longer the stale holder's
META_DIR = ".deploy"  # in each release: fingerprint, files.json, ok
SUDO = "sudo -n"  # root for a login that is not root: never a password prompt


def ready_check(marker: str) -> str:
    return f'test -f "$HOME"/{q(marker)}'


def probe(root: str, refs: str = "", ready_marker: str = "") -> str:
    """One round trip: $HOME, whether systemd runs, whether `ready_marker` (under $HOME) exists,
    the commit `refs` names (a `resolve_ref` command, run when given) and the app root's current
    release, fingerprint, manifest and lock holder, as key=value lines. A relative root is under
    $HOME."""
    base = q(root) if root.startswith("/") else f'"$HOME"/{q(root)}'
    resolve = (f"refs=$({refs} 2>&1); printf 'refs_exit=%s\\nrefs=%s\\n' $? \"$(printf %s \"$refs\""
               " | tr '\\n\\t' '; ')\";" if refs else "")
    ready = f" {ready_check(ready_marker)} && echo ready=yes;" if ready_marker else ""
    return (
        f'printf "home=%s\\n" "$HOME"; test -d /run/systemd/system && echo systemd=yes;{ready}'
        f" {resolve}"
        f" cd {base} 2>/dev/null || {{ echo state=absent; exit 0; }}; echo state=present;"
        f' printf "current=%s\\n" "$(readlink current 2>/dev/null)";'
        f' printf "fingerprint=%s\\n" "$(cat current/{META_DIR}/fingerprint 2>/dev/null)";'
        f' printf "manifest=%s\\n" "$(tr -d "\\n" 2>/dev/null < current/{META_DIR}/manifest.json)";'
        f' printf "lock=%s\\n" "$(tr "\\n" " " 2>/dev/null < {LOCK_DIR}/info)"'
    )


def acquire_lock(root: str, info: str) -> str:
    """Atomic mkdir; exit LOCK_HELD and print the holder when someone else has it."""
    r = q(root)
    return (f"mkdir -p {r} && if mkdir {r}/{LOCK_DIR} 2>/dev/null; then"
            f" printf '%s\\n' {q(info)} > {r}/{LOCK_DIR}/info; else"
            f" cat {r}/{LOCK_DIR}/info 2>/dev/null || echo unknown; exit {LOCK_HELD}; fi")


def break_lock(root: str, holder: str) -> str:
    """Remove the lock only if `holder` still holds it: rename it aside first (one rename
    wins, so two runs cannot both break it), then compare; a lock that is no longer
    `holder`'s is put back, and the exit is LOCK_MOVED."""
    r, aside = q(root), f"{q(root)}/{LOCK_DIR}.broken.$$"
    return (f"mv -T {r}/{LOCK_DIR} {aside} 2>/dev/null || exit {LOCK_MOVED};"
            f' if [ "$(cat {aside}/info 2>/dev/null)" = {q(holder.strip())} ]; then rm -rf {aside};'
            f" else mv -T {aside} {r}/{LOCK_DIR} 2>/dev/null || rm -rf {aside}; exit {LOCK_MOVED}; fi")


def release_lock(root: str) -> str:
    return f"rm -rf {q(root)}/{LOCK_DIR}"


def begin_release(root: str, info: str, stage: list[str]) -> str:
    """One round trip: take the deploy lock, list the releases (under the lock, as
    `list_releases` does) and run the `stage` commands that build the new release directory.
    Exit LOCK_HELD with the holder on stdout when the lock is held; exit STAGE_FAILED when a
    stage command fails (its error on stderr)."""
    steps = " && ".join(f"{{ {s}; }}" for s in stage) or "true"
    return (f"{acquire_lock(root, info)} && ( {list_releases(root)} )"
            f" && {{ ( {steps} ) || exit {STAGE_FAILED}; }}")


def resolve_ref(repo: str, ref: str) -> str:
    """The commit `ref` names in `repo` (a branch, a tag or a full sha), as the host sees it."""
    return (f"{GIT} ls-remote -- {q(repo)} {q(ref)} {q('refs/heads/' + ref)}"
            f" {q('refs/tags/' + ref + '^{}')} {q('refs/tags/' + ref)}")


def fetch_release(repo: str, sha: str, release: str) -> str:
    """Clone `repo` at `sha` into a fresh release directory."""
    d = q(release)
    return (f"rm -rf {d} && mkdir -p {d} && {GIT} clone --quiet --no-checkout -- {q(repo)} {d}"
            f" && {GIT} -C {d} -c advice.detachedHead=false checkout --quiet --detach {q(sha)} --")


def copy_release(source: str, release: str) -> str:
    """A new release that starts as a copy of `source` (same commit, new config)."""
    r = q(release)
    return (f"rm -rf {r} && mkdir -p {r} && cp -a {q(source)}/. {r}/"
            f" && rm -f {r}/{META_DIR}/ok {r}/{META_DIR}/fingerprint")


def link_shared(root: str, release: str, paths: tuple[str, ...], files: tuple[str, ...] = ()) -> str:
    """Link what persists across releases into the release: directories (`paths`) and files.
    A shared file stays a file: the first release seeds it with its own copy (or an empty one)."""
    parts = [f"mkdir -p {q(root)}/shared"]
    for p in paths:
        parts.append(f"mkdir -p {q(root + '/shared/' + p)} && rm -rf {q(release + '/' + p)}"
                     f" && ln -sfn {q(root + '/shared/' + p)} {q(release + '/' + p)}")
    for f in files:
        shared, here = q(f"{root}/shared/{f}"), q(f"{release}/{f}")
        parts.append(f"mkdir -p {q(os.path.dirname(f'{root}/shared/{f}'))}"
                     f" {q(os.path.dirname(f'{release}/{f}'))}"
                     f" && {{ [ -f {shared} ] || {{ [ -f {here} ] && cp -p {here} {shared}; }}"
                     f" || : > {shared}; }} && rm -rf {here} && ln -sfn {shared} {here}")
    return " && ".join(parts)


def make_dirs(paths: list[str]) -> str:
    return "mkdir -p " + " ".join(q(p) for p in sorted(set(paths)))


def run_script(release: str, script: str, env: dict[str, str]) -> str:
    """Run the release's install script in the release directory with non-secret context."""
    exports = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
    return f"cd {q(release)} && chmod +x {q(script)} && env {exports} ./{script}"


def run_step(release: str, command: str, env: dict[str, str]) -> str:
    """A stack's lifecycle step (its own shell, from the stack file) in the release directory,
    with the run's non-secret context in its environment."""
    exports = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
    return f"cd {q(release)} && env {exports} sh -c {q(command)}"


def interruptible(command: str, pgid_file: str) -> str:
    """`command` in a process group (and session) of its own whose id is written to
    `pgid_file`, so that `stop_group` can end it and everything it started. Without setsid(1)
    it runs as it is (and cannot be stopped early)."""
    # Double-quoted with every $ escaped, so that the inner shell (not this one) expands them.
    inner = r'''"printf '%s\\n' \"\$\$\" > \"\$1\"; sh -c \"\$2\"; rc=\$?; rm -f \"\$1\"; exit \"\$rc\""'''
    return (f"if command -v setsid >/dev/null; then setsid -w sh -c {inner} deploy-step"
            f" {q(pgid_file)} {q(command)}; else {command}; fi")


def stop_group(pgid_file: str) -> str:
    """TERM the process group `interruptible` recorded; KILL what is left after 5 s."""
    f = q(pgid_file)
    # `kill -SIG -PGID`, no `--`: dash's kill reads `--` as a pid.
    return (f'pg=$(cat {f} 2>/dev/null) || exit 0; rm -f {f}; [ -n "$pg" ] || exit 0;'
            f' kill -TERM "-$pg" 2>/dev/null || exit 0;'
            f' for _ in $(seq 50); do kill -0 "-$pg" 2>/dev/null || exit 0; sleep 0.1; done;'
            f' kill -KILL "-$pg" 2>/dev/null')


def health_command(release: str, command: str) -> str:
    return f"cd {q(release)} && {command}"


def health_url(url: str) -> str:
    """Fetch `url` on the host with curl, or python3 where curl is missing."""
    py = ("import sys,urllib.request;"
          "sys.exit(0 if urllib.request.urlopen(sys.argv[1],timeout=5).status<400 else 1)")
    return (f"if command -v curl >/dev/null; then curl -fsS -m 5 -o /dev/null {q(url)};"
            f" else python3 -c {q(py)} {q(url)}; fi")


def switch_current(root: str, release_name: str) -> str:
    """Point `current` at the release atomically: a new symlink renamed over the old one."""
    r = q(root)
    return (f"ln -sfn {q('releases/' + release_name)} {r}/.current.tmp"
            f" && mv -T {r}/.current.tmp {r}/current")


def mark_ok(release: str, fingerprint: str) -> str:
    m = f"{q(release)}/{META_DIR}"
    return f"mkdir -p {m} && printf '%s' {q(fingerprint)} > {m}/fingerprint && touch {m}/ok"


def list_releases(root: str) -> str:
    """Releases, oldest first, each with `ok` when its deploy passed its health checks."""
    r = q(root)
    return (f"cd {r}/releases 2>/dev/null || exit 0; for d in */; do [ -d \"$d\" ] || continue;"
            f" d=${{d%/}};"
            f" if [ -f \"$d/{META_DIR}/ok\" ]; then echo \"$d ok\"; else echo \"$d failed\"; fi; done")


def remove_releases(root: str, names: list[str]) -> str:
    return "rm -rf " + " ".join(q(f"{root}/releases/{n}") for n in names) if names else "true"


def audit(root: str, line: str) -> str:
    return f"mkdir -p {q(root)} && printf '%s\\n' {q(line)} >> {q(root)}/audit.log"


def audit_tail(root: str, lines: int = 5) -> str:
    return f"tail -n {int(lines)} {q(root)}/audit.log 2>/dev/null || true"


def has_systemd() -> str:
    return "test -d /run/systemd/system"


def service_units(install: list[tuple[str, str]], changes: list[tuple[str, str]]) -> str:
    """Install the release's unit files (`(path, name)`), enable every unit (so it runs after a
    reboot), then `(on_change, name)` for each in order: "restart", or "reload"
    (`reload-or-restart`: a unit that is not running starts).

    >>> service_units([("/r/.deploy/app.service", "app")], [("restart", "app"), ("reload", "nginx")]
    ...               ).replace('$( [ "$(id -u)" = 0 ] || echo "sudo -n" ) ', "").split(" && ")
    ... # doctest: +NORMALIZE_WHITESPACE
    ['install -m 0644 /r/.deploy/app.service /etc/systemd/system/app.service',
     'systemctl daemon-reload', 'systemctl enable --quiet -- app.service nginx.service',
     'systemctl restart -- app.service', 'systemctl reload-or-restart -- nginx.service']
    """
    sudo = '$( [ "$(id -u)" = 0 ] || echo "sudo -n" )'
    parts = [f"{sudo} install -m 0644 {q(path)} /etc/systemd/system/{q(name + '.service')}"
             for path, name in install]
    parts += [f"{sudo} systemctl daemon-reload"] if install else []
    if changes:
        parts.append(f"{sudo} systemctl enable --quiet -- {' '.join(q(n + '.service') for _, n in changes)}")
    verbs = {"restart": "restart", "reload": "reload-or-restart"}
    parts += [f"{sudo} systemctl {verbs[change]} -- {q(name + '.service')}" for change, name in changes]
    return " && ".join(parts)


# A strict env file reader in POSIX sh, for the fallback supervisor: it exports what systemd's
# EnvironmentFile= would (KEY="value" with \" \\ \$ \` escapes, KEY='value', KEY=value,
# comments, blank lines) and evaluates nothing. Its own variables are _ef_* so that an env
# file's names cannot collide with them. A line it cannot read stops it with the file
# and line number, never the line itself (it may hold a secret).
_ENV_READER = " ".join([
    r'env_file() { _ef_n=0;',
    r'while IFS= read -r _ef_line || [ -n "$_ef_line" ]; do _ef_n=$((_ef_n + 1));',
    r'_ef_line=${_ef_line#"${_ef_line%%[![:blank:]]*}"};',
    r"case $_ef_line in ''|'#'*|';'*) continue ;; esac;",
    r'_ef_key=${_ef_line%%=*}; _ef_value=${_ef_line#*=};',
    r'case $_ef_line in *=*) ;; *) _ef_key= ;; esac;',
    r"case $_ef_key in ''|[!A-Za-z_]*|*[!A-Za-z0-9_]*) _ef_bad=1 ;; *) _ef_bad= ;; esac;",
    r'case $_ef_value in',
    r'\"*\") _ef_rest=${_ef_value#?}; _ef_rest=${_ef_rest%?}; _ef_value=;',
    r'while [ -n "$_ef_rest" ]; do _ef_part=${_ef_rest%%[\"\\]*};',
    r'_ef_value=$_ef_value$_ef_part; _ef_rest=${_ef_rest#"$_ef_part"};',
    r"case $_ef_rest in '') ;;",
    r'\\?*) _ef_c=${_ef_rest#?}; _ef_c=${_ef_c%"${_ef_c#?}"};',
    r'case $_ef_c in [\"\\\$\`]) _ef_value=$_ef_value$_ef_c ;;',
    r'*) _ef_value=$_ef_value\\$_ef_c ;; esac;',
    r'_ef_rest=${_ef_rest#??} ;;',
    r'*) _ef_bad=1; _ef_rest= ;; esac; done ;;',
    r"\'*\') _ef_value=${_ef_value#?}; _ef_value=${_ef_value%?};",
    r"case $_ef_value in *\'*) _ef_bad=1 ;; esac ;;",
    "*[\\\"\\'\\\\]*|[[:blank:]]*|*[[:blank:]]) _ef_bad=1 ;; esac;",
    r'if [ -n "$_ef_bad" ]; then',
    r"""printf '%s:%s: not KEY="value" (the line is not shown: it may hold a secret)\n'""",
    r'"$1" "$_ef_n" >&2; return 1; fi;',
    r'export "$_ef_key=$_ef_value"; done < "$1"; }',
])


def load_env_files(paths: list[str]) -> str:
    """Export the variables of each env file in `paths` that exists, read as systemd's
    EnvironmentFile= reads them and never run: a value is data, whatever it holds."""
    loads = " && ".join(f"{{ [ ! -f {q(p)} ] || env_file {q(p)}; }}" for p in paths)
    return f"{_ENV_READER}; {loads or 'true'}"


def nohup_service(root: str, name: str, workdir: str, argv: list[str], env_files: list[str]) -> str:
    """The stand-in supervisor for hosts without systemd: ExecStart (already split into `argv`)
    under nohup with the unit's env files, with a pid file. The env files are read first: when
    one has a line the reader refuses, this exits 1 and the old process keeps running."""
    pid = q(f"{root}/{name}.pid")
    log = q(f"{root}/{name}.log")
    return (f"cd {q(workdir)} && ( {load_env_files(env_files)} && {{"
            f" if [ -f {pid} ]; then old=$(cat {pid}); kill \"$old\" 2>/dev/null;"
            f" for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do"
            f" kill -0 \"$old\" 2>/dev/null || break; sleep 0.05; done; fi;"
            f" nohup {' '.join(q(a) for a in argv)} >> {log} 2>&1 < /dev/null & echo $! > {pid}; }} )")


def receive_file(path: str, mode: int) -> str:
    """Write stdin to the absolute `path` with `mode`: first to a temporary name only its owner
    can read, then renamed into place (atomic), so a reader never sees half a file. The content
    is never on a command line."""
    tmp = q(f"{path}.deploy-tmp")
    return f"umask 077 && cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} {q(path)}"


def read_file(path: str) -> str:
    return f"cat -- {q(path)}"


def then(first: str, command: str) -> str:
    """`command` after `first` succeeds, in one round trip; just `command` without `first`."""
    return f"{first} && {{ {command}; }}" if first else command


def finish_release(root: str, release: str, name: str, fingerprint: str, doomed: list[str],
                   audit_line: str) -> str:
    """After the checks pass, in one round trip: mark the release healthy, make it current,
    prune and append the audit line, then release the deploy lock whatever happened (the
    exit code is the steps', not the unlock's)."""
    return (f"{{ {mark_ok(release, fingerprint)} && {switch_current(root, name)}"
            f" && {{ {remove_releases(root, doomed)}; {audit(root, audit_line)}; }}; }};"
            f' rc=$?; {release_lock(root)}; exit "$rc"')


def log_command(root: str, lines: int, command: str) -> str:
    """The stack's own log command (from its stack file), in the app root, with $LINES set
    for it (exported first: `LINES=n cmd ${LINES}` would expand ${LINES} before the
    assignment, and always show the default)."""
    return f"cd {q(root)} && export LINES={int(lines)} && {command}"


def unit_states(units: list[str]) -> str:
    """Each unit's `systemctl is-active` state, one word a line, in order.

    >>> unit_states(["nginx", "chom-app"])
    'systemctl is-active -- nginx.service chom-app.service; true'
    """
    return f"systemctl is-active -- {' '.join(shlex.quote(f'{u}.service') for u in units)}; true"


# Tries TCP connections from the host, all at once: argv is the timeout in seconds, then
# (index, address, port) triples, never code; prints `reach.INDEX=ok` or `reach.INDEX=error WHY`.
_REACH_PY = """\
import socket, sys, threading, time
limit = float(sys.argv[1])
args = sys.argv[2:]
found = {}
def one(index, address, port):
    try:
        socket.create_connection((address, int(port)), timeout=limit).close()
        found[index] = "ok"
    except OSError as exc:
        found[index] = "error " + (str(exc) or type(exc).__name__)
threads = [threading.Thread(target=one, args=args[i:i + 3], daemon=True)
           for i in range(0, len(args), 3)]
for t in threads:
    t.start()
end = time.time() + limit + 2
for t in threads:
    t.join(max(0.0, end - time.time()))
for i in range(0, len(args), 3):
    print("reach.%s=%s" % (args[i], found.get(args[i], "error no answer").replace("\\n", " ")))
"""


def reach_probe(targets: tuple[tuple[str, int], ...], timeout: float = 3.0) -> str:
    """A TCP connection from the host to each (address, port), `timeout` seconds each, all at
    once: `reach.N=ok` / `reach.N=error WHY` with python3; without it, bash's /dev/tcp under
    timeout(1), `reach.N=exit CODE` (124: no answer in time); `reach.N=untested` without
    either. Each address must be an IP address or a host name (validate.host_address): it
    travels as an argument, never as code.
    """
    args = " ".join(f"{i} {q(address)} {int(port)}" for i, (address, port) in enumerate(targets))
    # Double-quoted with every $ escaped, so that the inner bash (not this shell) expands them.
    bash = "; ".join(f'timeout {timeout:g} bash -c "exec 3<>\\"/dev/tcp/\\$1/\\$2\\"" reach'
                     f" {q(address)} {int(port)} 2>/dev/null; printf 'reach.{i}=exit %s\\n' \"$?\""
                     for i, (address, port) in enumerate(targets))
    untested = "; ".join(f"echo reach.{i}=untested" for i in range(len(targets)))
    return (f"if command -v python3 >/dev/null 2>&1; then python3 -c {q(_REACH_PY)} {timeout:g}"
            f" {args}; elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1;"
            f" then {bash}; else {untested}; fi")


def doctor_probe(disk_path: str, commands: tuple[str, ...] = (),
                 reach: tuple[tuple[str, int], ...] = (), reach_timeout: float = 3.0) -> str:
    """Pre-flight facts in one round trip, as key=value lines, read-only: the host's clock first
    and last (`clock_start`, `clock_end`, so that the skew is measured over the round trip as
    NTP does), `sudo` (root, yes, missing, or `no WHY`), `os_id` and `os_version` (as
    os-release has them, quotes and all), `disk_kb` free on `disk_path`, `command:NAME=yes|no`
    for each of `commands`, then `reach_probe(reach)`.
    """
    clock = "printf 'clock_%s=%s\\n' {} \"$(date +%s.%N)\""
    parts = [
        clock.format("start"),
        'if [ "$(id -u)" = 0 ]; then echo sudo=root; elif ! command -v sudo >/dev/null 2>&1;'
        " then echo sudo=missing; elif out=$(sudo -n true 2>&1 < /dev/null); then echo sudo=yes;"
        " else printf 'sudo=no %s\\n' \"$(printf %s \"$out\" | head -n 1)\"; fi",
        "{ cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; }"
        " | sed -n -e 's/^ID=/os_id=/p' -e 's/^VERSION_ID=/os_version=/p'",
        f"df -Pk -- {q(disk_path)} 2>/dev/null | awk 'NR == 2 {{ print \"disk_kb=\" $4 }}'",
    ]
    if commands:
        parts.append(f"for c in {' '.join(q(c) for c in commands)}; do"
                     ' if command -v "$c" >/dev/null 2>&1; then r=yes; else r=no; fi;'
                     " printf 'command:%s=%s\\n' \"$c\" \"$r\"; done")
    if reach:
        parts.append(reach_probe(reach, reach_timeout))
    parts.append(clock.format("end"))
    return "; ".join(parts)


def read_markers(markers: list[str]) -> str:
    """Each completion marker under $HOME: `NAME: its first line`, or `NAME: missing`.

    >>> read_markers([".setup-done", "a b"]).split("; do")[0]
    "for m in .setup-done 'a b'"
    """
    names = " ".join(q(m) for m in markers)
    return (f'for m in {names}; do if [ -f "$HOME/$m" ]; then printf \'%s: %s\\n\' "$m"'
            f' "$(head -n 1 "$HOME/$m")"; else printf \'%s: missing\\n\' "$m"; fi; done')


# --- the deploy user and trust between hosts (provision.py runs these) ----------------------

def user_command(user: str, public_key: str, sudo: str) -> str:
    """Create `user` (home, bash) with passwordless sudo and `public_key` authorized, each only
    when missing; prints user=, sudo=, key= lines (created/changed/unchanged). `user` has been
    checked against stacks.USER_NAME; the key is quoted.

    >>> "useradd --create-home --shell /bin/bash -- stilgar" in user_command("stilgar", "k", "")
    True
    """
    return as_root(user_script(user, public_key), sudo)


def as_root(script: str, sudo: str) -> str:
    """`script` run as root: by this login itself when it is root, else under `sudo -n`.

    >>> as_root("id -u", "sudo -n ")
    "sudo -n sh -c 'id -u'"
    """
    return f"{sudo}sh -c {q(script)}"


def user_script(user: str, public_key: str) -> str:
    """The script of `user_command`, run as root."""
    u, key = q(user), q(public_key.strip())
    sudoers = q(f"/etc/sudoers.d/90-deployer-{user}")
    line = q(f"{user} ALL=(ALL) NOPASSWD:ALL")
    return f"""set -eu
if id -u {u} >/dev/null 2>&1; then echo user=unchanged; else
  useradd --create-home --shell /bin/bash -- {u}; echo user=created; fi
if [ "$(cat {sudoers} 2>/dev/null)" = {line} ]; then echo sudo=unchanged; else
  printf '%s\\n' {line} > {sudoers}.tmp; chmod 0440 {sudoers}.tmp
  visudo -cqf {sudoers}.tmp; mv {sudoers}.tmp {sudoers}; echo sudo=changed; fi
home=$(getent passwd {u} | cut -d: -f6)
install -d -m 700 -o {u} -g {u} "$home/.ssh"
keys="$home/.ssh/authorized_keys"
if [ -f "$keys" ] && grep -qxF -- {key} "$keys"; then echo key=unchanged; else
  printf '%s\\n' {key} >> "$keys"; echo key=added; fi
chown {u}: "$keys"; chmod 600 "$keys"
"""


def host_key_command(user: str, sudo: str) -> str:
    """The public half of `user`'s own key on this host, made (ed25519, no passphrase: it is
    for unattended SSH between the stack's hosts) only when missing; prints made= then the key."""
    as_user = f"sudo -n -u {q(user)} --" if sudo else f"runuser -u {q(user)} --"
    return f"{as_user} sh -c {q(host_key_script(user))}"


def host_key_script(user: str) -> str:
    """The script of `host_key_command`, run as `user`."""
    u = q(user)
    return f"""set -eu
home=$(getent passwd {u} | cut -d: -f6)
if [ -f "$home/.ssh/id_ed25519" ]; then echo made=no; else
  ssh-keygen -q -t ed25519 -N '' -C "{user}@$(hostname)" -f "$home/.ssh/id_ed25519"; echo made=yes; fi
cat "$home/.ssh/id_ed25519.pub"
"""


def trust_check_command(address: str, port: int = 22) -> str:
    """As the deploy user: SSH to the other host with no password (BatchMode never asks). The
    other host's key is learned on first use (accept-new) inside the stack's own network, and
    refused if it ever changes.

    >>> trust_check_command("10.0.0.2")
    'ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10 -p 22 -- 10.0.0.2 true'
    """
    return (f"ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10"
            f" -p {int(port)} -- {q(address)} true")


# --- provisioning: packages, files, directories, units (provision.py runs these) ------------

def probe_command(packages: list[str], paths: list[str], units: list[str]) -> str:
    """One round trip: each package's installed version (`pkg:NAME=` empty when absent), each
    path's sha256, mode and owner (`path:P=` empty when absent), each unit's enabled and active
    state."""
    parts = ["set +e"]
    for p in packages:
        w = q(p)
        parts.append(f"printf 'pkg:%s=%s\\n' {w} \"$(dpkg-query -W -f='${{Status}} ${{Version}}'"
                     f" -- {w} 2>/dev/null | sed -n 's/^install ok installed //p')\"")
    for path in paths:
        w = q(path)
        parts.append(f"if [ -e {w} ]; then printf 'path:%s=%s %s\\n' {w}"
                     f" \"$(sha256sum < {w} 2>/dev/null | cut -d' ' -f1)\" \"$(stat -c '%a %U' {w})\";"
                     f" else printf 'path:%s=\\n' {w}; fi")
    for unit in units:
        w = q(f"{unit}.service")
        parts.append(f"printf 'unit:%s=%s %s\\n' {q(unit)}"
                     f" \"$(systemctl is-enabled {w} 2>/dev/null)\""
                     f" \"$(systemctl is-active {w} 2>/dev/null)\"")
    return "\n".join(parts)


def install_packages_command(names: list[str], sudo: str) -> str:
    """Debian packages, pinned ones as name=version; never a prompt.

    >>> install_packages_command(["nginx", "redis=5:7.0"], "")[-66:]
    'apt-get install -y -q --no-install-recommends -- nginx redis=5:7.0'
    """
    return (f"{sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
            f" --no-install-recommends -- {' '.join(q(n) for n in names)}")


def install_file_command(tmp: str, path: str, mode: str, owner: str, sudo: str) -> str:
    """Move an uploaded file into place with its mode and owner, atomically (install writes a
    new inode; a reader sees the old file or the new one)."""
    o, p = q(owner), q(path)
    return (f"{sudo}install -D -m {q(mode)} -o {o} -g \"$(id -gn {o})\""
            f" -- {q(tmp)} {p}.deploy-new && {sudo}mv -f -- {p}.deploy-new {p};"
            f" rc=$?; rm -f -- {q(tmp)}; exit $rc")


def dir_command(path: str, mode: str, owner: str, sudo: str) -> str:
    o = q(owner)
    return f"{sudo}install -d -m {q(mode)} -o {o} -g \"$(id -gn {o})\" -- {q(path)}"


def units_command(reload_daemon: bool, enable: list[str], start: list[str], restart: list[str],
                  reload: list[str], sudo: str) -> str:
    """One round trip for the units: daemon-reload when a unit file changed, then enable, start,
    restart (a changed unit) and reload-or-restart (a changed file it uses) of those running
    now (one that is not running reads the file when it starts); prints reloaded=NAME."""
    parts = ["set -e"]
    if reload_daemon:
        parts.append(f"{sudo}systemctl daemon-reload")
    for verb, names in (("enable", enable), ("start", start), ("restart", restart)):
        if names:
            parts.append(f"{sudo}systemctl {verb} -- {' '.join(q(f'{n}.service') for n in names)}")
    for name in reload:
        w = q(f"{name}.service")
        parts.append(f"if systemctl -q is-active -- {w}; then {sudo}systemctl reload-or-restart -- {w};"
                     f" echo reloaded={q(name)}; fi")
    return "\n".join(parts)
