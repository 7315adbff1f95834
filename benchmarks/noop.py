"""No-op deploy benchmark: `deploy dashboard ENV apply` with nothing to change, against its floor
measured side by side in one run: the bare engine's no-op plan of the same root (same engine,
same initialised data dir, same variables and state) plus one SSH round trip to the host.

    make demo   # once: the sandbox with the demo applied
    python benchmarks/noop.py [-C PROJECT] [--env demo] [--repeat 7]

The two take turns (the order alternates), so a busier moment of the machine is shared. Prints
each run, the medians and their ratio, and the engine starts deploy made (from its run log).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deployer import engine as engines  # noqa: E402
from deployer import pipeline  # noqa: E402
from deployer.logs import RunLog  # noqa: E402

DEPLOY = str(Path(sys.executable).with_name("deploy"))


def sandbox_environment(project: Path) -> dict[str, str]:
    done = subprocess.run([DEPLOY, "sandbox", "env", "--json", "-C", str(project)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["data"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-C", "--project", type=Path, default=REPO)
    parser.add_argument("--env", default="demo")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    # `deploy` as installed: pip compiles every module. An editable checkout run under
    # PYTHONDONTWRITEBYTECODE=1 would compile each module changed since its .pyc on every run.
    compileall.compile_dir(REPO / "deployer", quiet=1)
    project = args.project.resolve()
    os.environ.update(sandbox_environment(project))
    environ = dict(os.environ)
    settings, stack, env = pipeline.load_inputs(project, "dashboard", args.env)
    masker = env.masker(settings)
    with RunLog.create(settings.work_dir / "logs", f"bench-noop-{env.name}", masker) as log:
        ws = pipeline.workspace(settings, stack, env, masker=masker, log=log,
                                progress=lambda _line: None, verbose=False)
        outputs = ws.outputs()
    host = f"{outputs['ssh_user']}@{outputs['host_address']}"
    plan_file = Path(ws.env["TF_DATA_DIR"]) / "tfplan-bench"
    bare_plan = [*ws.engine.argv, f"-chdir={ws.root}", *engines.plan_args(plan_file)]
    ssh = ["ssh", "-i", settings.ssh_key, "-o", "BatchMode=yes", "-o",
           f"UserKnownHostsFile={settings.work_dir / 'known_hosts' / env.name}", host, "true"]
    deploy = [DEPLOY, "dashboard", env.name, "apply", "-y", "--json", "-C", str(project)]

    def timed(argv: list[str], env_vars: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
        started = time.perf_counter()
        done = subprocess.run(argv, env=env_vars, capture_output=True, text=True)
        took = time.perf_counter() - started
        if done.returncode not in ok:
            raise SystemExit(f"{argv[0]} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return took, done.stdout

    runs: dict[str, list[float]] = {"deploy": [], "engine plan": [], "ssh": []}
    starts: list[list[str]] = []
    for repeat in range(args.repeat):
        order = ("deploy", "floor") if repeat % 2 == 0 else ("floor", "deploy")
        for what in order:
            if what == "deploy":
                took, out = timed(deploy, environ)
                result = json.loads(out)["data"]
                if result["changed"]:
                    raise SystemExit("the deploy changed something: run it until it reports no changes")
                runs["deploy"].append(took)
                starts.append(re.findall(r"-chdir=\S+ (\w+)", Path(result["log_path"]).read_text()))
            else:
                took, _ = timed(bare_plan, ws.env, ok=(0,))  # -detailed-exitcode: 0 is "no changes"
                runs["engine plan"].append(took)
                took, _ = timed(ssh, environ)
                runs["ssh"].append(took)
        print(f"repeat {repeat + 1}: deploy {runs['deploy'][-1]:.2f}s   engine plan"
              f" {runs['engine plan'][-1]:.2f}s + ssh {runs['ssh'][-1]:.2f}s", flush=True)
    plan_file.unlink(missing_ok=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    floor = med["engine plan"] + med["ssh"]
    print(f"\nmedians of {args.repeat} (dashboard/{env.name}, engine {ws.engine.label}, host {host}):")
    print(f"  deploy dashboard {env.name} apply (no changes): {med['deploy']:.2f}s")
    print(f"  floor: engine no-op plan {med['engine plan']:.2f}s + one ssh round trip {med['ssh']:.2f}s"
          f" = {floor:.2f}s")
    print(f"  ratio deploy/floor: {med['deploy'] / floor:.2f}x")
    print(f"  engine runs per deploy: {' '.join(starts[-1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
