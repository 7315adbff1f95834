"""Pure builders: each returns the shell command a step runs on a host, and runs nothing.

Every path argument is absolute (the caller resolves the remote $HOME once) and quoted. No
secret ever appears in a command: rendered files travel by SFTP.
"""

from __future__ import annotations

import shlex

q = shlex.quote

LOCK_DIR = ".deploy-lock"
META_DIR = ".deploy"  # in each release: fingerprint, files.json, ok


def ready_check(marker: str) -> str:
    return f'test -f "$HOME"/{q(marker)}'


def probe(root: str, refs: str = "") -> str:
    """One round trip: $HOME, whether systemd runs, the commit `refs` names (a `resolve_ref`
    command, run when given) and the app root's current release, fingerprint, manifest and lock
    holder, as key=value lines. A relative root is under $HOME."""
    base = q(root) if root.startswith("/") else f'"$HOME"/{q(root)}'
    resolve = (f"refs=$({refs} 2>&1); printf 'refs_exit=%s\\nrefs=%s\\n' $? \"$(printf %s \"$refs\""
               " | tr '\\n\\t' '; ')\";" if refs else "")
    return (
        'printf "home=%s\\n" "$HOME"; test -d /run/systemd/system && echo systemd=yes;'
        f" {resolve}"
        f" cd {base} 2>/dev/null || {{ echo state=absent; exit 0; }}; echo state=present;"
        f' printf "current=%s\\n" "$(readlink current 2>/dev/null)";'
        f' printf "fingerprint=%s\\n" "$(cat current/{META_DIR}/fingerprint 2>/dev/null)";'
        f' printf "manifest=%s\\n" "$(tr -d "\\n" < current/{META_DIR}/manifest.json 2>/dev/null)";'
        f' printf "lock=%s\\n" "$(cat {LOCK_DIR}/info 2>/dev/null | tr "\\n" " ")"'
    )


def acquire_lock(root: str, info: str) -> str:
    """Atomic mkdir; exit 3 and print the holder when someone else has it."""
    r = q(root)
    return (f"mkdir -p {r} && if mkdir {r}/{LOCK_DIR} 2>/dev/null; then"
            f" printf '%s\\n' {q(info)} > {r}/{LOCK_DIR}/info; else"
            f" cat {r}/{LOCK_DIR}/info 2>/dev/null || echo unknown; exit 3; fi")


def release_lock(root: str) -> str:
    return f"rm -rf {q(root)}/{LOCK_DIR}"


def begin_release(root: str, info: str, stage: list[str]) -> str:
    """One round trip: take the deploy lock, list the releases (under the lock, as
    `list_releases` does) and run the `stage` commands that build the new release directory.
    Exit 3 with the holder on stdout when the lock is held; exit 4 when a stage command fails
    (its error on stderr)."""
    steps = " && ".join(f"{{ {s}; }}" for s in stage) or "true"
    return f"{acquire_lock(root, info)} && ( {list_releases(root)} ) && {{ ( {steps} ) || exit 4; }}"


def resolve_ref(repo: str, ref: str) -> str:
    """The commit `ref` names in `repo` (a branch, a tag or a full sha), as the host sees it."""
    return (f"git ls-remote {q(repo)} {q(ref)} {q('refs/heads/' + ref)} {q('refs/tags/' + ref + '^{}')}"
            f" {q('refs/tags/' + ref)}")


def fetch_release(repo: str, sha: str, release: str) -> str:
    """Clone `repo` at `sha` into a fresh release directory."""
    d = q(release)
    return (f"rm -rf {d} && mkdir -p {d} && git clone --quiet --no-checkout {q(repo)} {d}"
            f" && git -C {d} -c advice.detachedHead=false checkout --quiet {q(sha)}")


def copy_release(source: str, release: str) -> str:
    """A new release that starts as a copy of `source` (same commit, new config)."""
    r = q(release)
    return (f"rm -rf {r} && mkdir -p {r} && cp -a {q(source)}/. {r}/"
            f" && rm -f {r}/{META_DIR}/ok {r}/{META_DIR}/fingerprint")


def link_shared(root: str, release: str, paths: tuple[str, ...]) -> str:
    parts = [f"mkdir -p {q(root)}/shared"]
    for p in paths:
        parts.append(f"mkdir -p {q(root + '/shared/' + p)} && rm -rf {q(release + '/' + p)}"
                     f" && ln -sfn {q(root + '/shared/' + p)} {q(release + '/' + p)}")
    return " && ".join(parts)


def make_dirs(paths: list[str]) -> str:
    return "mkdir -p " + " ".join(q(p) for p in sorted(set(paths)))


def run_script(release: str, script: str, env: dict[str, str]) -> str:
    """Run the release's install script in the release directory with non-secret context."""
    exports = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
    return f"cd {q(release)} && chmod +x {q(script)} && env {exports} ./{script}"


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


def install_unit(unit_path: str, name: str) -> str:
    sudo = '$( [ "$(id -u)" = 0 ] || echo "sudo -n" )'
    return (f"{sudo} install -m 0644 {q(unit_path)} /etc/systemd/system/{q(name)}.service"
            f" && {sudo} systemctl daemon-reload && {sudo} systemctl enable {q(name)}"
            f" && {sudo} systemctl restart {q(name)}")


def nohup_service(root: str, name: str, workdir: str, exec_start: str, env_files: list[str]) -> str:
    """The stand-in supervisor for hosts without systemd: ExecStart under nohup, with a pid file."""
    pid = q(f"{root}/{name}.pid")
    log = q(f"{root}/{name}.log")
    sources = " ".join(f"[ -f {q(f)} ] && . {q(f)};" for f in env_files)
    return (f"if [ -f {pid} ]; then old=$(cat {pid}); kill $old 2>/dev/null;"
            f" for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do"
            f" kill -0 $old 2>/dev/null || break; sleep 0.05; done; fi;"
            f" cd {q(workdir)} && (set -a; {sources} set +a;"
            f" nohup {exec_start} >> {log} 2>&1 < /dev/null & echo $! > {pid})")
