"""The container image for the tests, with podman: the base image's stand-in, the
build, and containers that are always removed, even after a failure.

No container registry is reachable here, so ``python:3.11-slim-bookworm`` is made from
Debian's packages (debootstrap, through the Debian mirror apt already uses) and
imported under that name; it stays in podman's store, so later runs reuse it. The
host's CA bundle goes into it, so that pip inside ``podman build`` reaches the package
index the way the host does. This sandbox forbids raising resource limits and has
hybrid cgroups: containers run with runc and explicit ulimits (crun and the defaults
fail), on the host's network, where PostgreSQL and Redis are.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servers import BIN, ROOT

BASE = "docker.io/library/python:3.11-slim-bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "host",
]
TOOLS = ("podman", "runc", "debootstrap")
# Two test runs on one machine must not debootstrap at the same time.
BASE_LOCK = Path(tempfile.gettempdir()) / "stores-base-image.lock"


def missing_tools() -> list[str]:
    """What this machine lacks to build and run the image (root is one of them)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return missing if os.geteuid() == 0 else [*missing, "root"]


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The mirror apt is configured with for Debian ``SUITE``: the first source that
    serves it, in sources.list or sources.list.d (one-line or deb822 format)."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in path.read_text().split("\n\n"):
                fields: dict[str, list[str]] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith("#"):
                        name, value = line.split(":", 1)
                        fields[name.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []):
                    return fields["uris"][0]
        elif path.suffix == ".list":
            for line in path.read_text().splitlines():
                # deb [options] URI suite components
                words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise RuntimeError(f"no apt source for Debian {SUITE} in {apt_dir}")


def ensure_base_image() -> str:
    """Import the base image's stand-in unless podman has it; says which it was."""
    with BASE_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", BASE, check=False).returncode == 0:
            return "cached"
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="stores-base-") as root:
            mirror = debian_mirror()
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, root, mirror],
                check=True,
                capture_output=True,
                timeout=900,
            )
            rootfs = Path(root)
            # What the official slim image leaves out too: package lists and caches.
            for junk in (
                "var/lib/apt/lists",
                "var/cache/apt",
                "usr/share/doc",
                "usr/share/man",
                "usr/share/locale",
            ):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
            shutil.copyfile(CA_BUNDLE, rootfs / CA_BUNDLE.relative_to("/"))
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            podman_import = subprocess.run(
                ["podman", "import", "--change", "ENV=LANG=C.UTF-8", "-", BASE],
                stdin=tar.stdout,
                capture_output=True,
                timeout=300,
                check=False,
            )
            tar.stdout.close()
            assert tar.wait() == 0 and podman_import.returncode == 0, podman_import.stderr
        return f"built in {time.monotonic() - started:.0f} s"


def host_pip_index() -> str | None:
    """The package index the host's pip uses, if it is not PyPI's own (a local
    ``file:`` index cannot be reached from inside the build)."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        found = subprocess.run(
            [str(BIN / "python"), "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            check=False,
        )
        url = found.stdout.strip() if found.returncode == 0 else ""
    return url if url and not url.startswith("file:") else None


def build_image(tag: str) -> float:
    """``podman build`` of the repository as ``tag``; the seconds it took. Docker's
    format: OCI's drops HEALTHCHECK."""
    index = host_pip_index()
    build_args = ["--build-arg", f"PIP_INDEX_URL={index}"] if index else []
    started = time.monotonic()
    result = podman(
        "build", "--format", "docker", *RUN_FLAGS, *build_args, "-t", tag, str(ROOT), timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return time.monotonic() - started


def image_size(tag: str) -> int:
    return int(podman("image", "inspect", tag, "--format", "{{.Size}}").stdout)


class Container:
    """One container of the image, started detached (``podman run -d``)."""

    def __init__(self, image: str, env: dict[str, str], role: str) -> None:
        self.image = image
        self.env = env
        self.name = f"stores-test-{role}-{uuid.uuid4().hex[:10]}"
        self.port = env.get("PORT", "8000")
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self, *args: str) -> list[str]:
        variables = [arg for name, value in self.env.items() for arg in ("-e", f"{name}={value}")]
        return ["podman", "run", "-d", "--name", self.name, *RUN_FLAGS, *variables, self.image]

    def start(self) -> None:
        result = subprocess.run(
            self.command(), capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False)

    def logs(self) -> str:
        """What the container wrote, stdout and stderr (podman's own messages apart)."""
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            podman("inspect", self.name, "--format", "{{json .State}}").stdout
        )
        return state

    def wait(self, timeout: float = 60) -> int:
        """Until it exits; its exit code."""
        return int(podman("wait", self.name, timeout=timeout).stdout.strip())

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@contextmanager
def containers(image: str, *envs: dict[str, str], role: str = "api") -> Iterator[list[Container]]:
    """Containers of ``image``, one per environment, started at the same moment;
    removed at the end whatever happened."""
    started = [Container(image, env, f"{role}{i}") for i, env in enumerate(envs)]
    try:
        runs = [subprocess.Popen(c.command(), stdout=subprocess.DEVNULL) for c in started]
        assert [run.wait(timeout=120) for run in runs] == [0] * len(runs)
        yield started
    finally:
        for container in started:
            container.remove()
