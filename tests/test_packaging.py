"""The package as users get it: a wheel and an sdist built from this checkout, the wheel
installed into a fresh virtualenv (no access to the checkout or the test environment), and its
console script run there: ``--version``, ``serve`` and an echo round trip with ``connect``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import pywebtransport

SOURCE = Path(pywebtransport.__file__).resolve().parent
ROOT = SOURCE.parent.parent
VERSION = pywebtransport.__version__

#: Bounds of the steps (seconds). Building and installing may download from the package index.
BUILD_TIMEOUT = 90.0
VENV_TIMEOUT = 30.0
INSTALL_TIMEOUT = 90.0
COMMAND_TIMEOUT = 20.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _clean_env() -> dict[str, str]:
    """The environment for the installed commands: nothing that points back at the checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


async def _run(*command: str | Path, timeout: float, cwd: Path) -> str:
    """Run ``command`` to its end within ``timeout`` seconds; return its stdout (status 0)."""
    process = await asyncio.create_subprocess_exec(
        *map(str, command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_clean_env(),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{command} exited {process.returncode}: {err.decode()}"
    return out.decode()


def _copy_project(target: Path) -> Path:
    """What the build reads (the build writes metadata next to the sources: not in the checkout)."""
    project = target / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        SOURCE,
        project / "src" / "pywebtransport",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return project


def _check_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    web = SOURCE / "web"
    expected = {"pywebtransport/py.typed"} | {
        f"pywebtransport/web/{path.name}" for path in [*web.glob("*.html"), *web.glob("*.js")]
    }
    assert any(name.endswith(".html") for name in expected)
    assert any(name.endswith(".js") for name in expected)
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    info = f"pywebtransport-{VERSION}.dist-info"
    assert any(n.startswith(info) and n.endswith("/LICENSE") for n in names), sorted(names)
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Project-URL: Changelog," in metadata


def _check_sdist(sdist: Path) -> None:
    prefix = f"pywebtransport-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for name in ("LICENSE", "pyproject.toml", "src/pywebtransport/py.typed"):
        assert prefix + name in names, f"missing from the sdist: {name}"
    assert any(
        n.startswith(prefix + "src/pywebtransport/web/") and n.endswith(".js") for n in names
    )


async def test_wheel_installs_and_its_commands_run(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    dist = tmp_path / "dist"
    await _run(
        sys.executable,
        "-m",
        "build",
        "--outdir",
        dist,
        project,
        timeout=BUILD_TIMEOUT,
        cwd=tmp_path,
    )
    wheels = list(dist.glob(f"pywebtransport-{VERSION}-*.whl"))
    sdists = list(dist.glob(f"pywebtransport-{VERSION}.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    _check_wheel(wheels[0])
    _check_sdist(sdists[0])

    venv = tmp_path / "venv"
    await _run(sys.executable, "-m", "venv", venv, timeout=VENV_TIMEOUT, cwd=tmp_path)
    bin_dir = venv / "bin"
    await _run(
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        wheels[0],
        timeout=INSTALL_TIMEOUT,
        cwd=tmp_path,
    )
    # Imported from the virtualenv, not from the checkout.
    where = await _run(
        bin_dir / "python",
        "-c",
        "import sys, pywebtransport; print(pywebtransport.__file__.startswith(sys.prefix))",
        timeout=COMMAND_TIMEOUT,
        cwd=tmp_path,
    )
    assert where == "True\n", where

    command = bin_dir / "pywebtransport"
    version = await _run(command, "--version", timeout=COMMAND_TIMEOUT, cwd=tmp_path)
    assert version == f"pywebtransport {VERSION}\n"

    await _serve_and_connect(command, tmp_path)


async def _serve_and_connect(command: Path, cwd: Path) -> None:
    """``serve`` on free ports, then one ``connect`` echo round trip of each kind against it."""
    stderr = (cwd / "serve.stderr").open("wb")
    serve = await asyncio.create_subprocess_exec(
        command,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--http-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=_clean_env(),
    )
    stderr.close()
    lines: list[str] = []
    try:
        assert serve.stdout is not None
        async with asyncio.timeout(COMMAND_TIMEOUT):
            while not lines or not lines[-1].startswith("READY "):
                raw = await serve.stdout.readline()
                assert raw, f"serve exited: {lines} {(cwd / 'serve.stderr').read_text()}"
                lines.append(raw.decode().rstrip("\n"))
        fields = dict(part.split("=", 1) for part in lines[-1].split()[1:])
        url = f"https://127.0.0.1:{fields['udp']}/echo"
        assert f"WebTransport echo server on {url}" in lines

        out = await _run(
            command,
            "connect",
            url,
            "--cert-hash",
            fields["hash"],
            "--count",
            "2",
            "--size",
            "100",
            timeout=COMMAND_TIMEOUT,
            cwd=cwd,
        )
        assert f"connected to {url}" in out
        assert "bidirectional streams: 2/2 round trips of 100 bytes" in out
        assert "datagrams: " in out

        serve.send_signal(signal.SIGTERM)
        async with asyncio.timeout(COMMAND_TIMEOUT):
            assert await serve.wait() == 0
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
