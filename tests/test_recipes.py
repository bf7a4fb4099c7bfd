"""The deployment recipes, run rather than read: the Dockerfile's build and run stages in clean
virtualenvs (Docker itself is not on these machines), and the systemd unit's ExecStart through
genapi's own argument parser, so neither can rot.

The Dockerfile is interpreted, not copied into the test: each stage gets a directory standing for
its filesystem (`/wheels` of the build stage is `<tmp>/build/wheels`) and a clean virtualenv
standing for its image's Python; COPY copies from the repository as the build context (less what
.dockerignore leaves out), RUN runs each `&&`-joined command (`python` being the stage's
virtualenv), skipping only the system setup a virtualenv cannot do (apt-get, useradd), and the
run stage's CMD starts the gateway with a test config mounted where the image expects it. Then a
real /health request (the HEALTHCHECK's own command) and a WebSocket call reach it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from genapi.cli.main import parser as genapi_parser
from support.gateway_proc import BANNER, wait_until

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
UNIT = REPO / "deploy" / "genapi.service"

SYSTEM_SETUP = {"apt-get", "useradd", "groupadd"}  # what a virtualenv has no use for: skipped, and listed
BUILD_TIMEOUT = 900  # compiling every extension on a loaded 2-core machine


# --- the Dockerfile, parsed ------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    image: str
    steps: list[tuple[str, str]] = field(default_factory=list)  # (instruction, arguments) in order

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.steps if ins == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"Dockerfile stage {self.name}: no {instruction}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for ins, rest in instructions(text):
        if ins == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif ins == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            m = re.search(r"\s+AS\s+(\S+)$", rest, re.IGNORECASE)
            found.append(Stage(m.group(1) if m else str(len(found)), image))
        else:
            assert found, f"Dockerfile: {ins} before the first FROM"
            found[-1].steps.append((ins, rest))
    return found


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list: CMD ["genapi", ...]."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """.dockerignore: the last pattern matching the path (or one of its parent directories) decides."""
    parts = relative.split("/")
    verdict = False
    for negate, rx in patterns:
        if any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            verdict = not negate
    return verdict


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        out.append((negate, re.compile(rx)))
    return out


# --- the Dockerfile, run ----------------------------------------------------------------------------


class StageRun:
    """One stage's filesystem (`root`) and Python (a clean virtualenv, `venv`)."""

    def __init__(self, stage: Stage, base: Path) -> None:
        self.stage = stage
        self.root = base / stage.name
        self.root.mkdir()
        self.venv = base / f"{stage.name}-venv"
        venv.EnvBuilder(with_pip=True, clear=True).create(self.venv)
        self.python = str(self.venv / "bin" / "python")
        self.workdir = self.root
        self.skipped: list[str] = []

    def path(self, absolute: str) -> Path:
        """Where the stage's absolute path lives here (inside the stage's root, never above it)."""
        mapped = (self.root / absolute.lstrip("/")).resolve()
        assert mapped.is_relative_to(self.root), absolute
        return mapped

    def env(self) -> dict[str, str]:
        """A clean process environment: the virtualenv first on PATH, none of the test's PYTHONPATH
        (the repository's src must not stand in for what the stage installed); pip's own settings
        (its find-links, its index) stay."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def map_arg(self, arg: str) -> str:
        if arg.startswith("/"):
            return str(self.path(arg))
        option, eq, value = arg.partition("=")
        if eq and option.startswith("-") and value.startswith("/"):
            return f"{option}={self.path(value)}"
        return arg

    def copy(self, args: str, stages_run: dict[str, StageRun]) -> None:
        words = shlex.split(args)
        source_root: Path | None = None
        if words[0].startswith("--from="):
            source_root = stages_run[words.pop(0).split("=", 1)[1]].root
        *sources, dest = words
        target = self.path(dest) if dest.startswith("/") else (self.workdir / dest)
        patterns = dockerignore_patterns()
        for src in sources:
            origin = source_root / src.lstrip("/") if source_root is not None else REPO / src
            assert origin.exists(), f"COPY {src}: not in the {'stage' if source_root else 'build context'}"
            if source_root is None:
                assert not ignored(origin.relative_to(REPO).as_posix(), patterns), (
                    f"COPY {src}: left out by .dockerignore"
                )
            # Docker: a file lands in a dest ending with "/" under its own name; a directory's contents
            # (not the directory itself) land in dest
            into = target / origin.name if origin.is_file() and (dest.endswith("/") or len(sources) > 1) else target
            if origin.is_file():
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)
                continue
            for path in sorted(origin.rglob("*")):
                rel_context = path.relative_to(REPO).as_posix() if source_root is None else ""
                if source_root is None and ignored(rel_context, patterns):
                    continue
                out = into / path.relative_to(origin)
                if path.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                else:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out)

    def run(self, args: str) -> None:
        for command in args.split("&&"):
            words = shlex.split(command)
            program = words[0]
            if program in SYSTEM_SETUP:
                self.skipped.append(command.strip())
                continue
            assert program in ("python", "rm", "mkdir"), (
                f"Dockerfile stage {self.stage.name}: RUN {command.strip()!r}: tests/test_recipes.py does not "
                "know how to run this in a virtualenv: teach it (or skip it as system setup)"
            )
            argv = [self.python if program == "python" else program, *(self.map_arg(w) for w in words[1:])]
            done = subprocess.run(
                argv, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT
            )
            assert done.returncode == 0, (
                f"Dockerfile stage {self.stage.name}: RUN {command.strip()!r} exited {done.returncode}\n"
                f"--- stdout (tail) ---\n{done.stdout[-4000:]}\n--- stderr (tail) ---\n{done.stderr[-4000:]}"
            )

    def play(self, stages_run: dict[str, StageRun]) -> None:
        for ins, args in self.stage.steps:
            if ins == "WORKDIR":
                self.workdir = self.path(args)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif ins == "COPY":
                self.copy(args, stages_run)
            elif ins == "RUN":
                self.run(args)


@dataclass
class Image:
    build: StageRun
    run: StageRun
    cmd: list[str]
    healthcheck: list[str]


TEST_CONFIG = """\
[gateway]
host = "127.0.0.1"
port = 0
control_port = 0

[auth]
require_verified_user_id = false

[[functions]]
service = "demo"
request_type = "echo"
mfa = "genapi.demo:echo"
arg_types = { text = "string", n = { type = "num", default_value = 1 } }
arg_orders = ["text", "n"]
"""

CALL = """\
import asyncio, json, sys
import genapi, genapi._core.wire
from genapi.client import Client

async def main():
    client = await Client.connect(sys.argv[1])
    await client.join("api:lobby")
    reply = await client.call("demo", "echo", {"text": "from the image"})
    await client.close()
    print(json.dumps({"result": reply.result, "package": genapi.__file__, "compiled": genapi._core.wire.__file__}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The Dockerfile's two stages, played: the build stage's wheels, the run stage's install."""
    found = stages(DOCKERFILE.read_text())
    assert [s.name for s in found] == ["build", "run"], "Dockerfile: a build stage, then a run stage"
    base = tmp_path_factory.mktemp("image")
    played: dict[str, StageRun] = {}
    for stage in found:
        played[stage.name] = StageRun(stage, base)
        played[stage.name].play(played)
    run = found[-1]
    health = re.match(r"(?:--\S+\s+)*CMD\s+(.*)$", run.last("HEALTHCHECK"))
    assert health, run.last("HEALTHCHECK")
    return Image(played["build"], played["run"], exec_form(run.last("CMD")), exec_form(health.group(1)))


def test_dockerfile_shape() -> None:
    """What the recipe promises, read from the file: two stages, the run stage not root, port 4000
    exposed, a health check on /health, the command, and the /dev/shm need stated."""
    text = DOCKERFILE.read_text()
    build, run = stages(text)
    assert run.last("USER") not in ("root", "0"), "the run stage runs as a non-root user"
    assert "4000" in run.last("EXPOSE").split()
    assert run.last("STOPSIGNAL") == "SIGTERM"
    assert re.search(r"/health(?![\w/])", run.last("HEALTHCHECK")), "the HEALTHCHECK asks /health"
    assert exec_form(run.last("CMD")) == [
        "genapi",
        "serve",
        "--config",
        "/etc/genapi/gateway.toml",
        "--workers",
        "auto",
    ]
    assert not any("gcc" in r for r in run.all("RUN")), "no compiler in the run stage"
    assert any("pip wheel" in r for r in build.all("RUN")), "the build stage makes the wheels"
    assert "--shm-size" in text and "/dev/shm" in text, "the Dockerfile states what /dev/shm must hold"


def context_files(stage: Stage) -> list[str]:
    """The files the stage's COPY lines take from the build context (the repository), relative to
    it, less what .dockerignore leaves out."""
    patterns = dockerignore_patterns()
    taken: list[str] = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        if words[0].startswith("--from="):
            continue
        for src in words[:-1]:
            origin = REPO / src
            paths = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            taken += [rel for rel in (p.relative_to(REPO).as_posix() for p in paths) if not ignored(rel, patterns)]
    return taken


def test_build_context_leaves_out_local_builds() -> None:
    """The build stage takes the sources from a developer's tree, never what a local build left
    beside them (compiled modules, generated C, which the stage makes itself): checked on the tree
    as it is (after an editable install it holds both) and on the names such a build writes."""
    build = stages(DOCKERFILE.read_text())[0]
    taken = context_files(build)
    assert {"pyproject.toml", "setup.py", "README.md", "src/genapi/__init__.py", "src/genapi/_core/wire.pyx"} <= set(
        taken
    )
    local = [p for p in taken if p.endswith((".so", ".c")) or "__pycache__" in p]
    assert not local, f".dockerignore lets a local build into the image's build stage: {local}"
    patterns = dockerignore_patterns()
    for made in (
        "src/genapi/_core/wire.c",
        "src/genapi/_core/wire.cpython-311-x86_64-linux-gnu.so",
        "src/genapi/__pycache__/config.cpython-311.pyc",
        "build/temp.linux-x86_64-cpython-311/src/genapi/_core/wire.o",
        ".venv/bin/python",
    ):
        assert ignored(made, patterns), f".dockerignore does not leave out {made}"
    assert not ignored("src/genapi/_core/wire.pyx", patterns)


def test_image_serves_health_and_websocket(image: Image, tmp_path: Path) -> None:
    """The run stage's CMD serves the config mounted at /etc/genapi/gateway.toml: the HEALTHCHECK's
    own command passes while it runs (and fails once it stopped), a WebSocket call through the
    installed package is answered, and SIGTERM (the STOPSIGNAL) stops it cleanly."""
    run = image.run
    assert run.skipped and all(c.split()[0] in SYSTEM_SETUP for c in run.skipped)
    mount = run.path(image.cmd[image.cmd.index("--config") + 1])
    mount.parent.mkdir(parents=True, exist_ok=True)
    mount.write_text(TEST_CONFIG)
    program = shutil.which(image.cmd[0], path=str(run.venv / "bin"))
    assert program, f"the run stage installed no {image.cmd[0]} command"
    argv = [program, *(run.map_arg(a) for a in image.cmd[1:])]
    stderr = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(argv, cwd=run.root, env=run.env(), stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        banner = proc.stdout.readline()  # type: ignore[union-attr]
        m = BANNER.search(banner)
        assert m, f"the image's CMD did not start: {banner!r}\n{(tmp_path / 'stderr').read_text()[-3000:]}"
        port = int(m.group(2))

        probe = [run.python if image.healthcheck[0] == "python" else image.healthcheck[0], *image.healthcheck[1:]]
        assert any("127.0.0.1:4000/health" in a for a in probe), image.healthcheck
        probe = [a.replace("127.0.0.1:4000/", f"127.0.0.1:{port}/") for a in probe]

        def healthy() -> bool:
            return subprocess.run(probe, env=run.env(), capture_output=True, timeout=60).returncode == 0

        assert wait_until(healthy, timeout=60, interval=0.5), "the HEALTHCHECK command never passed"

        call = subprocess.run(
            [run.python, "-c", CALL, f"ws://127.0.0.1:{port}/socket"],
            cwd=run.root,
            env=run.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr[-3000:]
        answer = json.loads(call.stdout.strip().splitlines()[-1])
        assert answer["result"] == {"text": "from the image", "n": 1}
        for key in ("package", "compiled"):  # the wheel's, not the repository's
            assert Path(answer[key]).is_relative_to(run.venv), answer
        assert answer["compiled"].endswith(".so")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stderr.close()
    assert code == 0, f"SIGTERM: exit {code}\n{(tmp_path / 'stderr').read_text()[-3000:]}"
    assert not healthy(), "the HEALTHCHECK command passes with no gateway running"


# --- the systemd unit --------------------------------------------------------------------------------


def unit_entries() -> dict[str, list[str]]:
    """`Key=value` lines of the unit (a key may repeat), `\\` continuations joined."""
    entries: dict[str, list[str]] = {}
    pending = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        key, _, value = (pending + line).partition("=")
        pending = ""
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def test_systemd_unit_execstart_parses_and_stop_outlasts_the_drain() -> None:
    """ExecStart is a `genapi serve` command line genapi's own parser accepts; the unit stops with
    SIGTERM and waits longer than genapi's drain (--drain-timeout plus the master's 10 s) before
    SIGKILL; not root; restarts on failure; secrets from an EnvironmentFile; nothing that hides /dev/shm."""
    unit = unit_entries()
    argv = shlex.split(unit["ExecStart"][-1])
    assert Path(argv[0]).name == "genapi", argv
    try:
        args = genapi_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"deploy/genapi.service ExecStart: `genapi serve` refuses {argv[1:]} (exit {exc.code})")
    assert args.command == "serve"
    assert args.config and args.workers == "auto"
    drain = args.drain_timeout if args.drain_timeout is not None else 10.0
    stop = float(unit["TimeoutStopSec"][-1].rstrip("s"))
    assert stop > drain + 10, f"TimeoutStopSec={stop} s does not outlast the drain ({drain} s) and the master's 10 s"
    assert unit["KillSignal"][-1] == "SIGTERM"
    assert unit["Restart"][-1] == "on-failure"
    assert unit["User"][-1] not in ("root", "0")
    assert unit.get("EnvironmentFile"), "secrets come from an EnvironmentFile"
    for key in ("InaccessiblePaths", "TemporaryFileSystem", "ReadOnlyPaths", "BindReadOnlyPaths"):
        assert not any("/dev" in v for v in unit.get(key, [])), f"{key} would hide /dev/shm from the workers"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit (unknown keys, bad values), its
    ExecStart pointed at an executable that exists here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    program = shutil.which("genapi") or sys.executable
    text = UNIT.read_text()
    argv0 = shlex.split(unit_entries()["ExecStart"][-1])[0]
    copy = tmp_path / "genapi.service"
    copy.write_text(text.replace(f"ExecStart={argv0} ", f"ExecStart={program} "))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    said = textwrap.indent((done.stdout + done.stderr).strip(), "  ")
    assert done.returncode == 0 and not said, f"systemd-analyze verify deploy/genapi.service:\n{said}"


# --- CI runs what the README says ----------------------------------------------------------------------


def readme_block(marker: str) -> list[str]:
    """The lines of the ```sh block right after `<!-- marker -->` in the README."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert m, f"README.md: no sh block after <!-- {marker} -->"
    return [line for line in m.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_install_and_test_command() -> None:
    """.ci/run is the README's developer install, then its test command, line for line and in order
    (other lines, such as upgrading pip, may sit between them)."""
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    wanted = readme_block("ci:install") + readme_block("ci:test")
    at = 0
    for line in wanted:
        assert line in ci[at:], f".ci/run does not run the README's `{line}` (after the lines before it)"
        at = ci.index(line, at) + 1
    assert wanted[-1] == "python -m pytest" and ci[at - 1] == "python -m pytest"
