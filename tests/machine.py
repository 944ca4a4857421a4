"""The Debian 13 machine that `.ci/rootfs boot trixie-systemd` boots, seen from the host.

`make test-systemd` runs tests/test_systemd.py inside `.ci/rootfs boot`, which sets MACHINE to
its run folder. Commands run inside the machine as root with `nsenter`, in all of its
namespaces (its own network, mounts and processes), as an operator's root shell would run them.
"""

import re
import subprocess
import time
from pathlib import Path

# What a root shell has on a Debian server: no variable of the host's leaks in.
ROOT_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class Machine:
    """The booted machine: run commands in it, reboot it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.share = folder / "share"  # /test inside, read-only there

    def init_pid(self, timeout: float = 60) -> int:
        """Return the pid (on the host) of the machine's init, waiting for it to start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                nspawn = int((self.folder / "nspawn.pid").read_text())
                children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
            except (FileNotFoundError, ValueError):
                children = []
            # systemd-nspawn's child becomes the machine's init: systemd, once it has started
            if children and Path(f"/proc/{children[0]}/comm").read_text().strip() == "systemd":
                return int(children[0])
            time.sleep(0.1)
        raise AssertionError(f"the machine has no init after {timeout} s:\n{self.console()}")

    def command(self, script: str, environ: dict | None = None) -> list[str]:
        """Return the command line that runs a bash script in the machine as root."""
        variables = [f"{k}={v}" for k, v in {**ROOT_ENVIRONMENT, **(environ or {})}.items()]
        nsenter = ["nsenter", f"--target={self.init_pid()}", "--all"]
        return [*nsenter, "env", "-i", *variables, "bash", "-e", "-o", "pipefail", "-c", script]

    def run(
        self,
        script: str,
        environ: dict | None = None,
        check: bool = True,
        timeout=180,
        stdin: str = "",
    ):
        """Run a bash script in the machine, `stdin` its standard input (not a terminal, as
        under a pipe); return its CompletedProcess (output as text)."""
        done = subprocess.run(
            self.command(script, environ),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"exit {done.returncode}: {script}\n--- stdout\n{done.stdout}\n"
                f"--- stderr\n{done.stderr}"
            )
        return done

    def start(self, script: str, environ: dict | None = None) -> subprocess.Popen:
        """Start a bash script in the machine without waiting for it."""
        return subprocess.Popen(
            self.command(script, environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_booted(self, timeout: float = 120) -> None:
        """Wait until systemd says the machine has finished booting, with no unit failed."""
        deadline = time.monotonic() + timeout
        while True:  # until systemd answers on its bus, which it opens a moment after it starts
            state = self.run("systemctl is-system-running --wait", check=False, timeout=timeout)
            if state.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        failed = self.run("systemctl --failed --no-legend", check=False).stdout
        assert state.stdout.strip() == "running", f"{state.stdout}{state.stderr}{failed}"

    def reboot(self) -> None:
        """Reboot the machine (.ci/rootfs boots it again) and wait until it is up."""
        old = self.init_pid()
        self.run("systemctl reboot")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.init_pid(timeout=1) != old:
                    break
            except AssertionError:
                pass  # between two boots
            time.sleep(0.2)
        else:
            raise AssertionError(f"the machine did not boot again:\n{self.console()}")
        self.wait_booted()

    def console(self) -> str:
        """Return the end of what the machine printed."""
        path = self.folder / "console.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def shell_blocks(markdown: str) -> list[str]:
    """Return the ```sh blocks of a Markdown text, each as the script it holds, indent removed."""
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```$", markdown, re.MULTILINE | re.DOTALL)
    return [re.sub(f"^{indent}", "", body, flags=re.MULTILINE) for indent, body in blocks]


def section(markdown: str, heading: str) -> str:
    """Return a Markdown section's text, from its heading to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find(f"\n{level} ", start + 1)
    return markdown[start : end if end != -1 else None]
